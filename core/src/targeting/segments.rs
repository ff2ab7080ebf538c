//! Segments (named, reusable conditions: `ab.create_segment(name, conditions)`) and id lists
//! (named sets of unit ids, `ab.add_to_id_list`): names, and the checks a segment's conditions
//! pass when written — every segment it refers to exists, and no chain of references comes back
//! to it.

use crate::error::{AbError, AbResult, Kind};
use crate::targeting::condition::Condition;
use std::collections::HashSet;

/// Segment and id-list names: 1–63 of `a-z0-9_-` (they appear in rules and explanations).
pub fn validate_name(what: &str, name: &str) -> AbResult<()> {
    if name.is_empty() || name.len() > 63 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err(AbError::invalid(format!("{what} name \"{name}\" must be 1–63 of a-z, 0-9, '_' and '-'")));
    }
    Ok(())
}

/// Checks that the segments `condition` (of segment `name`, or of a rule when `name` is None)
/// refers to exist (42704) and that none leads back to `name` (42P17, with the cycle).
/// `refs_of` gives the segments an existing segment refers to, `None` for an unknown one.
pub fn check_references(name: Option<&str>, condition: &Condition, refs_of: &dyn Fn(&str) -> Option<Vec<String>>) -> AbResult<()> {
    let mut stack: Vec<(String, Vec<String>)> = Vec::new();
    for s in condition.segments() {
        if Some(s) != name && refs_of(s).is_none() {
            return Err(AbError::undefined(format!("segment \"{s}\" does not exist")).with_hint("create it first with ab.create_segment"));
        }
        stack.push((s.to_string(), name.into_iter().map(String::from).chain([s.to_string()]).collect()));
    }
    let Some(name) = name else { return Ok(()) };
    let mut visited = HashSet::new();
    while let Some((s, path)) = stack.pop() {
        if s == name {
            return Err(AbError::new(Kind::InvalidDefinition, format!("segments would refer to each other in a cycle: {}", path.join(" -> "))));
        }
        if !visited.insert(s.clone()) {
            continue;
        }
        for next in refs_of(&s).unwrap_or_default() {
            let mut p = path.clone();
            p.push(next.clone());
            stack.push((next, p));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn names() {
        assert!(validate_name("segment", "eu_enterprise-2").is_ok());
        for bad in ["", "EU", "a b", &"x".repeat(64)] {
            assert_eq!(validate_name("segment", bad).unwrap_err().kind, Kind::InvalidParameter, "{bad}");
        }
    }

    #[test]
    fn references_must_exist_and_not_loop() {
        let existing: HashMap<&str, Vec<String>> = [("eu", vec![]), ("big_eu", vec!["eu".to_string()]), ("a", vec!["b".to_string()]), ("b", vec![])].into();
        let refs_of = |s: &str| existing.get(s).cloned();
        let c = |v| Condition::parse(&v, "conditions").unwrap();
        assert!(check_references(Some("x"), &c(json!({"segment": "big_eu"})), &refs_of).is_ok());
        assert!(check_references(None, &c(json!({"segment": "eu"})), &refs_of).is_ok());
        assert_eq!(check_references(None, &c(json!({"segment": "nope"})), &refs_of).unwrap_err().kind, Kind::Undefined);
        // b is redefined to refer to a, which refers to b.
        let e = check_references(Some("b"), &c(json!({"any": [{"segment": "a"}]})), &refs_of).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidDefinition);
        assert_eq!(e.message, "segments would refer to each other in a cycle: b -> a -> b");
        assert_eq!(check_references(Some("s"), &c(json!({"segment": "s"})), &refs_of).unwrap_err().kind, Kind::InvalidDefinition);
    }
}
