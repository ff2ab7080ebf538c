//! The place hierarchy: ltree labels made from place names, paths and their prefixes, and how
//! name matches are ranked.

use crate::error::{AbError, AbResult};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// A node of the hierarchy as a resolution returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub path: String,
    pub name: String,
    pub kind: String,
}

/// PostgreSQL 15's ltree: labels of A-Za-z0-9_, each under 256 characters.
pub const MAX_LABEL_LEN: usize = 255;

/// An ltree label from a place name: compatibility-decomposed (NFKD) with accents dropped, lower
/// case, every run of other characters folded to one '_', no leading or trailing '_', at most
/// 255 characters. "São Paulo" → "sao_paulo", "Washington, D.C." → "washington_d_c".
/// A name with no Latin letters or digits has no label: `fallback` is used then, else an error.
pub fn label(name: &str, fallback: Option<&str>) -> AbResult<String> {
    let mut out = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        let c = match c {
            'ß' => 's',
            'ø' | 'Ø' => 'o',
            'æ' | 'Æ' => 'a',
            'đ' | 'Đ' | 'ð' => 'd',
            'ł' | 'Ł' => 'l',
            'ı' => 'i',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut out = out.trim_end_matches('_').to_string();
    out.truncate(MAX_LABEL_LEN);
    let out = out.trim_end_matches('_').to_string();
    if out.is_empty() {
        return match fallback {
            Some(f) if f != name => label(f, None),
            _ => Err(AbError::invalid(format!("\"{name}\" has no letters or digits an ltree label can hold"))
                .with_hint("PostgreSQL 15 ltree labels are A-Za-z0-9_; pass a transliterated name or a fallback label")),
        };
    }
    Ok(out)
}

/// Checks a path as PostgreSQL 15's ltree accepts it, with an error that names the bad label.
pub fn validate_path(path: &str) -> AbResult<()> {
    if path.is_empty() {
        return Err(AbError::invalid("a hierarchy path must not be empty"));
    }
    for (i, l) in path.split('.').enumerate() {
        if l.is_empty() || l.len() > MAX_LABEL_LEN || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(AbError::invalid(format!("label {} (\"{l}\") of path \"{path}\" is not a valid ltree label", i + 1))
                .with_hint("labels are 1–255 of A-Za-z0-9_ in PostgreSQL 15; ab.place_label(name) makes one from a name"));
        }
    }
    Ok(())
}

/// The path of a new place (`ab.add_place`): `parent.label`, or `label` for a root; the label
/// is made from the name ([`label`]) unless given. Errors (22023): a blank name, a name with no
/// label and none given, a parent or resulting path that is not a valid ltree (naming the label).
pub fn new_place_path(parent: Option<&str>, name: &str, label_given: Option<&str>) -> AbResult<String> {
    if name.trim().is_empty() {
        return Err(AbError::invalid("a place needs a name that is not blank"));
    }
    let own = match label_given {
        Some(l) => l.to_string(),
        None => label(name, None)?,
    };
    let path = match parent {
        Some(p) => {
            validate_path(p)?;
            format!("{p}.{own}")
        }
        None => own,
    };
    validate_path(&path)?;
    Ok(path)
}

/// The number of labels of a path.
pub fn depth(path: &str) -> usize {
    path.bytes().filter(|b| *b == b'.').count() + 1
}

/// The path's ancestors, nearest first: "a.b.c" → "a.b", "a".
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind('.').map(|dot| &p[..dot])).skip(1)
}

/// Whether `ancestor` is a proper ancestor of `path`.
pub fn is_ancestor(ancestor: &str, path: &str) -> bool {
    path.len() > ancestor.len() && path.as_bytes()[ancestor.len()] == b'.' && path.starts_with(ancestor)
}

/// "a.b.c" → ["a", "a.b", "a.b.c"]: the root-down chain a resolution looks up.
pub fn prefixes(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = path.match_indices('.').map(|(i, _)| &path[..i]).collect();
    out.push(path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn labels() {
        assert_eq!(label("São Paulo", None).unwrap(), "sao_paulo");
        assert_eq!(label("Washington, D.C.", None).unwrap(), "washington_d_c");
        assert_eq!(label("  Île-de-France ", None).unwrap(), "ile_de_france");
        assert_eq!(label("Łódź", None).unwrap(), "lodz");
        assert_eq!(label("Straße 1", None).unwrap(), "strase_1");
        assert_eq!(label("東京", Some("JP-13")).unwrap(), "jp_13");
        assert_eq!(label("東京", None).unwrap_err().kind, Kind::InvalidParameter);
        assert_eq!(label(&"a".repeat(400), None).unwrap().len(), 255);
    }

    #[test]
    fn paths() {
        assert!(validate_path("world.north_america.usa").is_ok());
        for bad in ["", "world..usa", "world.north-america", "world.sao paulo", "world.ünter"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert_eq!(prefixes("a.b.c"), vec!["a", "a.b", "a.b.c"]);
        assert_eq!(prefixes("a"), vec!["a"]);
        assert_eq!(ancestors("a.b.c").collect::<Vec<_>>(), vec!["a.b", "a"]);
        assert_eq!(ancestors("a").count(), 0);
        assert_eq!((depth("a"), depth("a.b.c")), (1, 3));
        assert!(is_ancestor("a.b", "a.b.c") && !is_ancestor("a.b", "a.bc") && !is_ancestor("a.b", "a.b"));
    }

    #[test]
    fn paths_of_new_places() {
        assert_eq!(new_place_path(None, "World", None).unwrap(), "world");
        assert_eq!(new_place_path(Some("world.europe"), "São Paulo", None).unwrap(), "world.europe.sao_paulo");
        assert_eq!(new_place_path(Some("world"), "Berlin", Some("berlin_nh")).unwrap(), "world.berlin_nh");
        for (parent, name, given) in [(None, " ", None), (Some("world"), "東京", None), (Some("a..b"), "x", None), (Some("world"), "x", Some("bad-label"))] {
            assert_eq!(new_place_path(parent, name, given).unwrap_err().kind, crate::error::Kind::InvalidParameter);
        }
    }
}
