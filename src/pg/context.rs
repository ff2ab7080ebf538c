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
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;

impl Context {
    /// No context (NULL).
    pub const NONE: Context = Context(None);

    /// The argument as a context: NULL, JSON null or a jsonb object (22023 for any other JSON
    /// value).
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
        let header = unsafe { (*root).header };
        // JSON null (a raw scalar: a one-element array marked scalar) is no context, as SQL NULL.
        if header & JB_FSCALAR != 0 {
            let first = unsafe { *(std::ptr::addr_of!((*root).children) as *const u32) };
            if first & JENTRY_TYPEMASK == JENTRY_ISNULL {
                return Context::NONE;
            }
        }
        if header & JB_FOBJECT == 0 {
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
        let object = unsafe { Object::of(root) };
        let mut out = Map::new();
        for key in keys {
            if let Some(i) = object.find(key.as_bytes()) {
                out.insert(key.clone(), unsafe { object.value(i) });
            }
        }
        out
    }
}

// The binary layout of a jsonb object (PostgreSQL's utils/jsonb.h, stable on disk since 9.4):
// a header (pair count, kind bits), 2 × count JEntries (the keys, then their values), then the
// data. Each JEntry holds its item's type and either its length or, every JB_OFFSET_STRIDE
// entries, its end offset. Keys are sorted by length, then bytes. Read here directly, so a
// lookup costs no call into PostgreSQL and no allocation (getKeyJsonValueFromContainer pallocs).
const JB_CMASK: u32 = 0x0FFF_FFFF;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

/// A jsonb object container, read in place.
struct Object {
    count: usize,
    children: *const u32,
    data: *const u8,
}

impl Object {
    /// # Safety
    /// `root` must be a detoasted jsonb object container that outlives the `Object`.
    unsafe fn of(root: *mut pg_sys::JsonbContainer) -> Object {
        let count = (unsafe { (*root).header } & JB_CMASK) as usize;
        let children = unsafe { std::ptr::addr_of!((*root).children) } as *const u32;
        let data = unsafe { children.add(2 * count) } as *const u8;
        Object { count, children, data }
    }

    fn entry(&self, i: usize) -> u32 {
        unsafe { *self.children.add(i) }
    }

    /// Start of child `i`'s data (getJsonbOffset).
    fn offset(&self, i: usize) -> usize {
        let mut off = 0usize;
        for j in (0..i).rev() {
            let e = self.entry(j);
            off += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        off
    }

    /// Child `i`'s data: its type bits, and its bytes from `offset(i)` (getJsonbLength).
    fn child(&self, i: usize) -> (u32, usize, usize) {
        let e = self.entry(i);
        let off = self.offset(i);
        let len = if e & JENTRY_HAS_OFF != 0 { (e & JENTRY_OFFLENMASK) as usize - off } else { (e & JENTRY_OFFLENMASK) as usize };
        (e & JENTRY_TYPEMASK, off, len)
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.data.add(off), len) }
    }

    /// The index of the pair whose key is `key` (binary search in jsonb's key order).
    fn find(&self, key: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (_, off, len) = self.child(mid);
            let k = self.bytes(off, len);
            match len.cmp(&key.len()).then_with(|| k.cmp(key)) {
                std::cmp::Ordering::Equal => return Some(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// The value of pair `i` as serde_json (numbers digit for digit, as `arbitrary_precision`
    /// keeps them; a nested array or object printed and parsed, as rare as dotted paths).
    unsafe fn value(&self, i: usize) -> Value {
        let (kind, off, len) = self.child(self.count + i);
        // Numerics and containers start at the next 4-byte boundary (INTALIGN).
        let aligned = unsafe { self.data.add(off.next_multiple_of(4)) };
        match kind {
            JENTRY_ISSTRING => {
                // jsonb text is in the database encoding; pg_ab requires UTF-8.
                Value::String(String::from_utf8_lossy(self.bytes(off, len)).into_owned())
            }
            JENTRY_ISNUMERIC => {
                // numeric_out, as jsonb's own printer (and so `JsonArg`) writes it: 2.0 stays 2.0.
                let datum = pg_sys::Datum::from(aligned as pg_sys::Numeric);
                let text = unsafe { pgrx::direct_function_call::<&CStr>(pg_sys::numeric_out, &[Some(datum)]) };
                text.and_then(|t| t.to_str().ok()).and_then(|t| t.parse::<Number>().ok()).map_or(Value::Null, Value::Number)
            }
            JENTRY_ISBOOL_FALSE => Value::Bool(false),
            JENTRY_ISBOOL_TRUE => Value::Bool(true),
            JENTRY_ISCONTAINER => parse(&unsafe { container_text(aligned as *mut pg_sys::JsonbContainer) }),
            _ => Value::Null,
        }
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
