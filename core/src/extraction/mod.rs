//! Extraction: post-processing of extracted entities. The entity shape and 5-W classes
//! (`entities`), the rule-based baseline extractor (`extract`), confidence calibration
//! (`calibration`), deduplication (`dedup`), temporal normalisation (`temporal`). Depends on
//! `error`, and on `places` for place keys.

pub mod calibration;
pub mod dedup;
pub mod entities;
pub mod extract;
pub mod temporal;
