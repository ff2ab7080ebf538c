//! A unit's attributes as conditions read them: a source (`Attributes`) answering one attribute
//! at a time, and `Attr`, one value, borrowed from its source where it can be. A JSON object
//! (`serde_json::Map`) is a source; the pgrx layer reads the `jsonb` context in place, so a call
//! builds no map and copies no string it does not need.

use super::condition::Test;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// One attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr<'a> {
    Null,
    Bool(bool),
    /// A JSON number by its text, digit for digit as its source holds it (`120`, `2.0`, `1e3`).
    Number(Cow<'a, str>),
    /// A JSON number that is a whole number of at most 16 digits with no digits after the point
    /// (display scale 0: `120`, also `1.5e3`), by value: what a source reading numbers in binary
    /// gives for them (the jsonb context, whose `numeric_out` prints such a number as the same
    /// integer), so the usual attribute (`"seats": 120`) is neither printed nor parsed. Every
    /// condition treats it as `Number` of its decimal text.
    Integer(i64),
    String(Cow<'a, str>),
    /// An array or an object.
    Json(Cow<'a, Value>),
}

impl<'a> Attr<'a> {
    /// A JSON value as an attribute, borrowed.
    pub fn of(v: &'a Value) -> Attr<'a> {
        match v {
            Value::Null => Attr::Null,
            Value::Bool(b) => Attr::Bool(*b),
            Value::Number(n) => Attr::Number(Cow::Borrowed(n.as_str())),
            Value::String(s) => Attr::String(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => Attr::Json(Cow::Borrowed(v)),
        }
    }

    /// A JSON value as an attribute that owns it.
    pub fn owned(v: Value) -> Attr<'static> {
        match v {
            Value::Null => Attr::Null,
            Value::Bool(b) => Attr::Bool(b),
            Value::Number(n) => Attr::Number(Cow::Owned(n.as_str().to_string())),
            Value::String(s) => Attr::String(Cow::Owned(s)),
            v => Attr::Json(Cow::Owned(v)),
        }
    }

    /// A number's decimal text (`None` for any other kind).
    pub fn number_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Attr::Number(t) => Some(Cow::Borrowed(t)),
            Attr::Integer(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// The value as JSON (for explanations: what a condition read).
    pub fn to_value(&self) -> Value {
        match self {
            Attr::Null => Value::Null,
            Attr::Bool(b) => Value::Bool(*b),
            Attr::Number(t) => t.parse::<Number>().map_or(Value::Null, Value::Number),
            Attr::Integer(n) => Value::Number((*n).into()),
            Attr::String(s) => Value::String(s.to_string()),
            Attr::Json(v) => v.clone().into_owned(),
        }
    }
}

/// Where conditions read a unit's attributes from.
pub trait Attributes {
    /// The attribute at `path`: one name, or a dotted name split at its dots (`["device",
    /// "os"]`), where a key holding the whole dotted name wins over the path through nested
    /// objects. `None` when missing.
    fn attribute(&self, path: &[String]) -> Option<Attr<'_>>;

    /// Whether every test holds: `tests[i]` (a test and its case folding) on the attribute
    /// `names[i]`; `names` are one-part names in [`key_order`], repeats allowed. A missing or
    /// null attribute fails its test (`Test::on_attr`). A source whose keys are sorted the same
    /// way (jsonb's) reads them all in one pass and runs the tests as it goes, stopping at the
    /// first that fails; this default looks each name up with `attribute`.
    fn all_of(&self, names: &[String], tests: &[(Test, bool)], now_micros: i64) -> bool {
        names.iter().zip(tests).all(|(name, (test, ci))| self.attribute(std::slice::from_ref(name)).is_some_and(|v| test.on_attr(&v, *ci, now_micros)))
    }
}

/// `a == b` for byte slices, without a call to `memcmp` for the short ones (attribute names and
/// values: a call was most of a key comparison's cost).
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        // Two overlapping loads cover any length from 4 to 16.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// The order of object keys in jsonb (utils/adt/jsonb_util.c, lengthCompareJsonbString):
/// shorter first, then bytewise.
pub fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl Attributes for Map<String, Value> {
    fn attribute(&self, path: &[String]) -> Option<Attr<'_>> {
        by_path(path, |key| self.get(key).map(Attr::of))
    }
}

/// No attributes (a call without a context).
pub struct NoAttributes;

impl Attributes for NoAttributes {
    fn attribute(&self, _: &[String]) -> Option<Attr<'_>> {
        None
    }
}

/// `Attributes::attribute`'s rule over any object, given `get`, its lookup of one top-level
/// key: the whole dotted name as one key first, then the path through nested objects.
pub fn by_path<'a>(path: &[String], get: impl Fn(&str) -> Option<Attr<'a>>) -> Option<Attr<'a>> {
    if path.len() > 1 {
        if let Some(v) = get(&path.join(".")) {
            return Some(v);
        }
    }
    let (first, rest) = path.split_first()?;
    match get(first)? {
        v if rest.is_empty() => Some(v),
        Attr::Json(Cow::Borrowed(v)) => within(v, rest).map(Attr::of),
        Attr::Json(Cow::Owned(v)) => within(&v, rest).cloned().map(Attr::owned),
        _ => None,
    }
}

/// The value at `rest` inside `v` (`v` itself for an empty path).
pub fn within<'a>(mut v: &'a Value, rest: &[String]) -> Option<&'a Value> {
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn a_json_object_answers_by_name_and_dotted_path() {
        let a = json!({"plan": "pro", "seats": 2.0, "device": {"os": "ios"}, "device.os": "android", "on": true, "n": null});
        let a = a.as_object().unwrap();
        assert_eq!(a.attribute(&path("plan")), Some(Attr::String("pro".into())));
        // Numbers keep their text: 2.0 is not printed as 2.
        assert_eq!(a.attribute(&path("seats")), Some(Attr::Number("2.0".into())));
        // The whole dotted name as a key wins over the nested path.
        assert_eq!(a.attribute(&path("device.os")), Some(Attr::String("android".into())));
        assert_eq!(a.attribute(&path("on")), Some(Attr::Bool(true)));
        assert_eq!(a.attribute(&path("n")), Some(Attr::Null));
        assert_eq!(a.attribute(&path("device.model")), None);
        assert_eq!(a.attribute(&path("missing")), None);
        assert_eq!(NoAttributes.attribute(&path("plan")), None);
        let nested = json!({"device": {"os": "ios"}});
        assert_eq!(nested.as_object().unwrap().attribute(&path("device.os")), Some(Attr::String("ios".into())));
    }

    #[test]
    fn a_source_that_owns_its_values_follows_dotted_paths_too() {
        // As the pgrx layer's jsonb context does: nested objects come back parsed, owned.
        let get = |k: &str| match k {
            "device" => Some(Attr::owned(json!({"os": {"name": "ios"}}))),
            "device.model" => Some(Attr::String("x1".into())),
            _ => None,
        };
        assert_eq!(by_path(&path("device.os.name"), get), Some(Attr::String("ios".into())));
        assert_eq!(by_path(&path("device.model"), get), Some(Attr::String("x1".into())));
        assert_eq!(by_path(&path("device.os.version"), get), None);
        assert_eq!(by_path(&path("device"), get).map(|a| a.to_value()), Some(json!({"os": {"name": "ios"}})));
    }

    #[test]
    fn values_round_trip() {
        for v in [json!(null), json!(true), json!(12.50), json!("x"), json!([1, "a"]), json!({"k": [2]})] {
            assert_eq!(Attr::of(&v).to_value(), v);
            assert_eq!(Attr::owned(v.clone()).to_value(), v);
        }
    }
}
