//! The `context` argument of the read functions, read straight from the jsonb container: only the
//! attributes the flag's or test's conditions name are looked up (a binary search of the
//! object's keys each) and turned into serde_json values. A flag or test without targeting never
//! reads it beyond checking that it is an object. `JsonArg` (json.rs), which prints the whole
//! value and parses it again, was most of a targeted call's cost (BENCHMARKS.md, session 7).

use super::error::raise;
use crate::error::{AbError, Kind};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use serde_json::{Map, Number, Value};
use std::ffi::CStr;

/// A `jsonb` context argument, not yet read: the detoasted value, or NULL.
pub struct Context(Option<*mut pg_sys::JsonbContainer>);

/// `JsonbContainer` header bits (utils/jsonb.h).
const JB_FOBJECT: u32 = 0x2000_0000;

impl Context {
    /// No context (NULL).
    pub const NONE: Context = Context(None);

    /// The argument as a context: NULL or a jsonb object (22023 for any other JSON value).
    ///
    /// # Safety
    /// `datum` must be a jsonb datum of the current call when `is_null` is false.
    pub unsafe fn from_datum(datum: pg_sys::Datum, is_null: bool) -> Context {
        if is_null {
            return Context::NONE;
        }
        // Detoasts, and copies a short-header value into an aligned one (the container needs it).
        let jb = unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) } as *mut pg_sys::Jsonb;
        let root = unsafe { std::ptr::addr_of_mut!((*jb).root) };
        if unsafe { (*root).header } & JB_FOBJECT == 0 {
            let shown = unsafe { container_text(root) };
            raise(AbError::invalid(format!("context must be a JSON object of attributes, got {shown}")));
        }
        Context(Some(root))
    }

    /// The attributes named `keys` (top-level keys; those the context lacks are absent), or every
    /// attribute when `keys` is `None`.
    pub fn attributes(&self, keys: Option<&[String]>) -> Map<String, Value> {
        let Some(root) = self.0 else { return Map::new() };
        let Some(keys) = keys else {
            return match parse(&unsafe { container_text(root) }) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
        };
        let mut out = Map::new();
        for key in keys {
            let Ok(len) = i32::try_from(key.len()) else { continue };
            let found = unsafe { pg_sys::getKeyJsonValueFromContainer(root, key.as_ptr().cast(), len, std::ptr::null_mut()) };
            if !found.is_null() {
                out.insert(key.clone(), unsafe { value_of(&*found) });
            }
        }
        out
    }
}

/// One jsonb value as serde_json (numbers digit for digit, as `arbitrary_precision` keeps them).
unsafe fn value_of(v: &pg_sys::JsonbValue) -> Value {
    match v.type_ {
        pg_sys::jbvType::jbvNull => Value::Null,
        pg_sys::jbvType::jbvBool => Value::Bool(unsafe { v.val.boolean }),
        pg_sys::jbvType::jbvString => {
            let s = unsafe { v.val.string };
            let bytes = unsafe { std::slice::from_raw_parts(s.val as *const u8, s.len.max(0) as usize) };
            // jsonb text is in the database encoding; pg_ab requires UTF-8 (as jsonb_out's reader did).
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        pg_sys::jbvType::jbvNumeric => {
            let text = unsafe { CStr::from_ptr(pg_sys::numeric_normalize(v.val.numeric)) };
            text.to_str().ok().and_then(|t| t.parse::<Number>().ok()).map_or(Value::Null, Value::Number)
        }
        // A nested array or object: printed and parsed, as rare as dotted attribute paths.
        pg_sys::jbvType::jbvBinary => parse(&unsafe { container_text(v.val.binary.data) }),
        _ => Value::Null,
    }
}

/// A container as JSON text (jsonb's own printer).
unsafe fn container_text(c: *mut pg_sys::JsonbContainer) -> String {
    let text = unsafe { pg_sys::JsonbToCString(std::ptr::null_mut(), c, 64) };
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

fn parse(text: &str) -> Value {
    match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => raise(
            AbError::new(Kind::TooLarge, "the context is nested deeper than 128 levels").with_hint("attributes need a few levels; flatten the value"),
        ),
        Err(e) => raise(AbError::invalid(format!("the context cannot be read: {e}"))),
    }
}

impl FromDatum for Context {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null { None } else { Some(unsafe { Context::from_datum(datum, false) }) }
    }
}

// As pgrx's own argument types (pgrx::callconv), for #[pg_extern] functions.
unsafe impl<'fcx> ArgAbi<'fcx> for Context {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or(Context::NONE) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        Nullable::Valid(unsafe { arg.unbox_arg_using_from_datum().unwrap_or(Context::NONE) })
    }
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(Context, arg_only = "jsonb");
