//! jsonb arguments read by pg_ab rather than by pgrx's `JsonB`, which panics (SQLSTATE XX000)
//! on a value serde_json refuses: nesting deeper than serde_json's limit of 128 levels. Here
//! that is a clear error (54000), and any other unreadable value is 22023.

use super::error::raise;
use crate::error::{AbError, Kind};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use serde_json::Value;

/// A `jsonb` argument as a serde_json value (numbers kept digit for digit: serde_json's
/// `arbitrary_precision`).
pub struct JsonArg(pub Value);

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        Some(JsonArg(unsafe { read_jsonb(datum) }))
    }
}

/// serde_json's nesting limit (its parser's `remaining_depth`): a value whose 128th nested
/// container would open is refused, as it was when this read went through serde_json's parser.
const MAX_DEPTH: usize = 128;

/// A jsonb value as serde_json's, read from its container with PostgreSQL's iterator rather than
/// printed by `jsonb_out` for serde_json to parse again (on a 1,000-item metrics batch those two
/// passes were about a tenth of the call). The same value comes out — numbers with the digits
/// `jsonb_out` prints (`numeric_out`'s text), strings as stored — and the same refusals: nesting
/// of 128 levels (54000), a string that is not UTF-8 (22023). A `#[pg_test]` compares both ways.
unsafe fn read_jsonb(datum: pg_sys::Datum) -> Value {
    use pg_sys::JsonbIteratorToken::*;
    let jsonb = unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) }.cast::<pg_sys::Jsonb>();
    let mut iterator = unsafe { pg_sys::JsonbIteratorInit(&mut (*jsonb).root) };
    let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    // The containers open, innermost last, each an object's with the key of its next value.
    let mut open: Vec<(Value, Option<String>)> = Vec::new();
    let mut top = Value::Null;
    loop {
        let token = unsafe { pg_sys::JsonbIteratorNext(&mut iterator, &mut v, false) };
        let complete = match token {
            // A scalar at the top is stored as a one-element array marked raw: its element is the value.
            WJB_BEGIN_ARRAY if unsafe { v.val.array.rawScalar } => continue,
            WJB_BEGIN_ARRAY | WJB_BEGIN_OBJECT => {
                if open.len() + 1 >= MAX_DEPTH {
                    raise(
                        AbError::new(Kind::TooLarge, "a jsonb argument is nested deeper than 128 levels")
                            .with_hint("entities, metrics and configurations need a few levels; flatten the value"),
                    );
                }
                let container = if token == WJB_BEGIN_ARRAY {
                    Value::Array(Vec::with_capacity(unsafe { v.val.array.nElems }.clamp(0, 1024) as usize))
                } else {
                    Value::Object(serde_json::Map::new())
                };
                open.push((container, None));
                continue;
            }
            WJB_KEY => {
                if let Some((_, key)) = open.last_mut() {
                    *key = Some(unsafe { string_of(&v) });
                }
                continue;
            }
            WJB_VALUE | WJB_ELEM => unsafe { scalar_of(&v) },
            WJB_END_ARRAY | WJB_END_OBJECT => match open.pop() {
                Some((container, _)) => container,
                None => continue, // the end of a top-level scalar's array
            },
            _ => break, // WJB_DONE
        };
        match open.last_mut() {
            Some((Value::Array(items), _)) => items.push(complete),
            Some((Value::Object(map), key)) => {
                map.insert(key.take().unwrap_or_default(), complete);
            }
            _ => top = complete,
        }
    }
    top
}

/// A `jbvString`'s text.
unsafe fn string_of(v: &pg_sys::JsonbValue) -> String {
    let s = unsafe { v.val.string };
    let bytes = unsafe { std::slice::from_raw_parts(s.val as *const u8, s.len.max(0) as usize) };
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => raise(AbError::invalid("a jsonb argument is not valid UTF-8")),
    }
}

/// A scalar `JsonbValue` (null, boolean, numeric, string) as serde_json's.
unsafe fn scalar_of(v: &pg_sys::JsonbValue) -> Value {
    match v.type_ {
        pg_sys::jbvType::jbvNull => Value::Null,
        pg_sys::jbvType::jbvBool => Value::Bool(unsafe { v.val.boolean }),
        pg_sys::jbvType::jbvString => Value::String(unsafe { string_of(v) }),
        pg_sys::jbvType::jbvNumeric => {
            let numeric = pg_sys::Datum::from(unsafe { v.val.numeric });
            let text = unsafe { pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::numeric_out, &[Some(numeric)]) };
            match text.and_then(|t| t.to_str().ok()).and_then(|t| t.parse::<serde_json::Number>().ok()) {
                Some(n) => Value::Number(n),
                None => raise(AbError::invalid("a jsonb argument holds a number that cannot be read")),
            }
        }
        other => raise(AbError::invalid(format!("a jsonb argument holds a value of unexpected kind {other}"))),
    }
}

// As pgrx's own argument types (pgrx::callconv, argue_from_datum!).
unsafe impl<'fcx> ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(JsonArg, arg_only = "jsonb");

/// A `jsonb` result built from a serde_json value directly with PostgreSQL's `pushJsonbValue`,
/// not printed as text for `jsonb_in` to parse again (pgrx's `JsonB`): on the extraction
/// pipeline's 1 KB request that text round trip was 15 % of the backend's time. The same value
/// comes out (a test compares every shape with `jsonb_in`'s); a string holding the NUL character,
/// which `jsonb_in` refuses as `\u0000`, is refused here too (22023).
pub struct Jsonb(pub Value);

impl Jsonb {
    /// Pushes `value` as `token` (a container as its begin, contents and end); returns what the
    /// last push returned — at the top level, the finished container.
    unsafe fn push(state: &mut *mut pg_sys::JsonbParseState, token: pg_sys::JsonbIteratorToken::Type, value: &Value) -> *mut pg_sys::JsonbValue {
        use pg_sys::JsonbIteratorToken::*;
        match value {
            Value::Array(items) => {
                unsafe { pg_sys::pushJsonbValue(state, WJB_BEGIN_ARRAY, std::ptr::null_mut()) };
                for item in items {
                    unsafe { Self::push(state, WJB_ELEM, item) };
                }
                unsafe { pg_sys::pushJsonbValue(state, WJB_END_ARRAY, std::ptr::null_mut()) }
            }
            Value::Object(map) => {
                unsafe { pg_sys::pushJsonbValue(state, WJB_BEGIN_OBJECT, std::ptr::null_mut()) };
                // In jsonb's key order (shorter first, then bytewise): PostgreSQL sorts each
                // object's pairs at its end (uniqueifyJsonbObject, qsort with a callback per
                // comparison, 5 % of a pipeline call), and its qsort returns at once on sorted input.
                let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
                pairs.sort_unstable_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
                for (key, item) in pairs {
                    let mut k = string_value(key);
                    unsafe { pg_sys::pushJsonbValue(state, WJB_KEY, &mut k) };
                    unsafe { Self::push(state, WJB_VALUE, item) };
                }
                unsafe { pg_sys::pushJsonbValue(state, WJB_END_OBJECT, std::ptr::null_mut()) }
            }
            scalar => {
                let mut v = unsafe { scalar_value(scalar) };
                unsafe { pg_sys::pushJsonbValue(state, token, &mut v) }
            }
        }
    }
}

/// A string as a `jbvString` pointing into `s` (copied when the jsonb is assembled).
fn string_value(s: &str) -> pg_sys::JsonbValue {
    if s.contains('\0') {
        raise(AbError::invalid("a result holds the NUL character (\\u0000), which jsonb cannot store"));
    }
    let len = i32::try_from(s.len()).unwrap_or_else(|_| raise(AbError::new(Kind::TooLarge, "a string of the result is over 1 GB")));
    pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvString,
        val: pg_sys::JsonbValue__bindgen_ty_1 { string: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 { len, val: s.as_ptr() as *mut _ } },
    }
}

/// null, a boolean, a number (an integer exactly, anything else through `numeric_in`, as
/// `jsonb_in` reads it) or a string.
unsafe fn scalar_value(v: &Value) -> pg_sys::JsonbValue {
    use pg_sys::JsonbValue__bindgen_ty_1 as Val;
    match v {
        Value::Null => pg_sys::JsonbValue { type_: pg_sys::jbvType::jbvNull, val: Val { boolean: false } },
        Value::Bool(b) => pg_sys::JsonbValue { type_: pg_sys::jbvType::jbvBool, val: Val { boolean: *b } },
        Value::Number(n) => {
            let numeric = match n.as_i64() {
                Some(i) => unsafe { pg_sys::int64_to_numeric(i) },
                None => {
                    let text = std::ffi::CString::new(n.to_string()).unwrap_or_else(|_| raise(AbError::invalid("a number of the result cannot be read")));
                    let datum = unsafe {
                        pgrx::direct_function_call_as_datum(pg_sys::numeric_in, &[Some(pg_sys::Datum::from(text.as_ptr())), Some(pg_sys::Datum::from(pg_sys::InvalidOid)), Some(pg_sys::Datum::from(-1i32))])
                    };
                    datum.map_or(std::ptr::null_mut(), |d| d.cast_mut_ptr())
                }
            };
            pg_sys::JsonbValue { type_: pg_sys::jbvType::jbvNumeric, val: Val { numeric } }
        }
        Value::String(s) => string_value(s),
        Value::Array(_) | Value::Object(_) => unreachable!("containers are pushed by Jsonb::push"),
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        let root = match &self.0 {
            Value::Array(_) | Value::Object(_) => unsafe { Self::push(&mut state, pg_sys::JsonbIteratorToken::WJB_ELEM, &self.0) },
            scalar => unsafe {
                // A scalar is stored as a one-element "raw scalar" array (utils/adt/jsonb.c).
                let mut open = pg_sys::JsonbValue {
                    type_: pg_sys::jbvType::jbvArray,
                    val: pg_sys::JsonbValue__bindgen_ty_1 {
                        array: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_2 { nElems: 0, elems: std::ptr::null_mut(), rawScalar: true },
                    },
                };
                pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY, &mut open);
                Self::push(&mut state, pg_sys::JsonbIteratorToken::WJB_ELEM, scalar);
                pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_END_ARRAY, std::ptr::null_mut())
            },
        };
        Some(pg_sys::Datum::from(unsafe { pg_sys::JsonbValueToJsonb(root) }))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl pgrx::callconv::BoxRet for Jsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(Jsonb, "jsonb");
