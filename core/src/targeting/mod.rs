//! Targeting: which units a flag's rule, a test's audience or a segment applies to, from the
//! unit's attributes (the caller's `context`), the transaction's time, segments and id lists.
//! A unit's attributes as conditions read them (`attributes`), the condition language
//! (`condition`), a flag's ordered rules (`rules`), segments and id lists (`segments`), the
//! checks of a unit's override (`overrides`). Depends on `error`, `experiments::hash` (a rule's rollout uses the flag's
//! bucket) and `places::hierarchy` (place paths); `experiments` uses it for evaluation.

pub mod attributes;
pub mod condition;
pub mod overrides;
pub mod rules;
pub mod segments;
