//! Analysis: is the challenger better, and is it safe? Statistics (`stats`: moments, Welch's
//! test, confidence sequences, SRM, sketches), the evaluation and its verdicts (`evaluation`),
//! risk conditions and guardrails (`risk`), health and alerts (`health`). Depends on `error`
//! and reads no other family.

pub mod evaluation;
pub mod health;
pub mod risk;
pub mod stats;
