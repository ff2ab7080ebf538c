//! Overrides of a flag's value or a test's variant for one unit (QA, support): what is checked
//! when one is set. Where they apply is decided by `experiments::flags` and `rules::TestTargeting`.

use crate::error::{AbError, AbResult};

/// An override's reason: free text for the audit trail, at most this many characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// Whether an override expiring at `expires` (µs since the Unix epoch; `None`: never) still
/// applies at `now`: it stops applying at its expiry, exactly.
pub fn unexpired(expires: Option<i64>, now: i64) -> bool {
    expires.is_none_or(|e| now < e)
}

/// The reason, when it is at most `MAX_REASON_CHARS` characters (22023 otherwise: a reason is a
/// note, a longer text belongs elsewhere).
pub fn check_reason(reason: &str) -> AbResult<&str> {
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(AbError::invalid(format!("an override's reason must be at most {MAX_REASON_CHARS} characters, got {n}"))
            .with_hint("keep the reason a short note; link to a ticket for more"));
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_up_to_the_limit_in_characters() {
        assert_eq!(check_reason(""), Ok(""));
        let at_limit = "é".repeat(MAX_REASON_CHARS);
        assert!(check_reason(&at_limit).is_ok(), "characters, not bytes");
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
    }

    #[test]
    fn an_override_stops_applying_at_its_expiry() {
        assert!(unexpired(None, i64::MAX));
        assert!(unexpired(Some(10), 9));
        assert!(!unexpired(Some(10), 10));
    }
}
