//! Analysis: is the challenger better, and is it safe? The fold of new metrics into sufficient
//! statistics (`fold`), statistics (`stats`: moments, Welch's
//! test, confidence sequences, SRM, sketches), the evaluation and its verdicts (`evaluation`),
//! risk conditions and guardrails (`risk`), the gates of a gated rollout (`gates`), health and
//! alerts (`health`), and the settings with their defaults (`settings`). Depends on `error` and
//! reads no other family.

pub mod evaluation;
pub mod fold;
pub mod gates;
pub mod health;
pub mod risk;
pub mod settings;
pub mod stats;
