//! Extraction: post-processing of extracted entities. The entity shape and 5-W classes
//! (`entities`), the rule-based baseline extractor (`extract`), confidence calibration
//! (`calibration`), deduplication (`dedup`), temporal expressions (`temporal`), the whole
//! pipeline for one request (`pipeline`) and the metrics recorded for it (`metrics`). Depends on
//! `error` and `places::keys` (how place names are looked up).

pub mod calibration;
pub mod dedup;
pub mod entities;
pub mod extract;
pub mod metrics;
pub mod pipeline;
pub mod temporal;
