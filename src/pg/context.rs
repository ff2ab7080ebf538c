//! The `context` argument of the read functions, read straight from the jsonb container as the
//! conditions ask for attributes (`targeting::attributes::Attributes`): the keys of an object of
//! up to 32 pairs scanned by length (a larger one's binary searched), strings borrowed from the
//! datum, numbers printed from their binary form, nothing built for attributes no condition
//! reads. A flag or test without targeting never reads it beyond checking that it is
//! an object. Printing the value and parsing it again (`JsonArg`), then building a map of the
//! attributes read, were most of a targeted call's cost (BENCHMARKS.md, sessions 7 to 9).

use super::error::raise;
use crate::error::{AbError, Kind};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use crate::targeting::attributes::{self, same_bytes, Attr, Attributes};
use crate::targeting::condition::Test;
use serde_json::Value;
use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::ffi::CStr;

/// A `jsonb` context argument, not yet read: the object (in place when its datum has a plain
/// header, else detoasted into the call's memory), or NULL. It points into memory of the
/// function call that made it and must not outlive that call: the `Attr`s it gives borrow
/// from there.
pub struct Context(Option<Object>);

/// `JsonbContainer` header bits (utils/jsonb.h).
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;

impl Context {
    /// No context (NULL).
    pub fn none() -> Context {
        Context(None)
    }

    /// The argument as a context: NULL, JSON null or a jsonb object (22023 for any other JSON
    /// value).
    ///
    /// # Safety
    /// `datum` must be a jsonb datum of the current call when `is_null` is false.
    pub unsafe fn from_datum(datum: pg_sys::Datum, is_null: bool) -> Context {
        if is_null {
            return Context::none();
        }
        // A plain 4-byte-header value (a parameter's, a constant's: the usual case) is used where
        // it is; any other is detoasted, and a short-header one copied aligned (the container
        // needs it) — by PostgreSQL, behind pgrx's error guard, which the first case skips.
        let p = datum.cast_mut_ptr::<u8>();
        let plain = cfg!(target_endian = "little") && unsafe { *p } & 0x03 == 0x00;
        let jb = if plain { p as *mut pg_sys::Jsonb } else { (unsafe { pg_sys::pg_detoast_datum(p as *mut pg_sys::varlena) }) as *mut pg_sys::Jsonb };
        let root = unsafe { std::ptr::addr_of_mut!((*jb).root) };
        let header = unsafe { (*root).header };
        // JSON null (a raw scalar: a one-element array marked scalar) is no context, as SQL NULL.
        if header & JB_FSCALAR != 0 {
            let first = unsafe { *(std::ptr::addr_of!((*root).children) as *const u32) };
            if first & JENTRY_TYPEMASK == JENTRY_ISNULL {
                return Context::none();
            }
        }
        if header & JB_FOBJECT == 0 {
            let shown = unsafe { container_text(root) };
            raise(AbError::invalid(format!("context must be a JSON object of attributes, got {shown}")));
        }
        Context(Some(unsafe { Object::of(root) }))
    }
}

impl Attributes for Context {
    fn attribute(&self, path: &[String]) -> Option<Attr<'_>> {
        let object = self.0.as_ref()?;
        // One name (the usual case) is looked up here, so the value is built once where the
        // caller wants it: passed back through `by_path`'s closure it was copied twice more,
        // and those copies stalled on the stores that built it (a fifth of a targeted call).
        if let [key] = path {
            return object.find(key.as_bytes()).map(|i| unsafe { object.value(i) });
        }
        attributes::by_path(path, |key| object.find(key.as_bytes()).map(|i| unsafe { object.value(i) }))
    }

    fn all_of(&self, names: &[String], tests: &[(Test, bool)], now_micros: i64) -> bool {
        // The tests run inside the pass (a static call each, not through a closure object).
        self.each_of(names, |i, v| tests.get(i).is_some_and(|(test, ci)| test.on_attr(v, *ci, now_micros)))
    }
}

impl Context {
    /// Each of `names` (one-part attribute names in `attributes::key_order`, repeats allowed)
    /// in that order, its value given to `f` with its index in `names`, until `f` returns
    /// false. False when `f` did or a name is missing; true when every name was found and `f`
    /// accepted each. An object of one offset stride (32 pairs) is read in one pass over its
    /// keys, a larger one by a binary search per name.
    #[inline(always)]
    pub fn each_of(&self, names: &[String], mut f: impl FnMut(usize, &Attr<'_>) -> bool) -> bool {
        let Some(object) = self.0.as_ref() else { return names.is_empty() };
        if object.count() > JB_OFFSET_STRIDE {
            return names.iter().enumerate().all(|(n, name)| object.find(name.as_bytes()).is_some_and(|i| f(n, &unsafe { object.value(i) })));
        }
        object.each_of(names, f)
    }
}

// The binary layout of a jsonb object (PostgreSQL's utils/jsonb.h, stable on disk since 9.4):
// a header (pair count, kind bits), 2 × count JEntries (the keys, then their values), then the
// data. Each JEntry holds its item's type and either its length or, every JB_OFFSET_STRIDE
// entries, its end offset. Keys are sorted by length, then bytes. Read here directly, so a
// lookup costs no call into PostgreSQL and no allocation (getKeyJsonValueFromContainer pallocs).
const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_OFFSET_STRIDE: usize = 32;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

/// A jsonb object container, read in place: one pointer, so a context is returned from the
/// argument's conversion in a register (a larger one was written to memory field by field and
/// read back whole, a stall on every call), and child offsets are summed per lookup, as
/// PostgreSQL does (an array of every child's start, summed once per call, cost more to build
/// and move than the few additions it saved: BENCHMARKS.md, session 13).
struct Object {
    /// The container's header word; its JEntries follow.
    root: NonNull<u32>,
}

impl Object {
    /// # Safety
    /// `root` must be a detoasted jsonb object container that outlives the `Object`.
    unsafe fn of(root: *mut pg_sys::JsonbContainer) -> Object {
        Object { root: unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*root).header)) } }
    }

    /// The number of pairs.
    #[inline(always)]
    fn count(&self) -> usize {
        (unsafe { *self.root.as_ptr() } & JB_CMASK) as usize
    }

    /// JEntry `i`: keys first, then their values.
    #[inline(always)]
    fn entry(&self, i: usize) -> u32 {
        unsafe { *self.root.as_ptr().add(1 + i) }
    }

    /// The children's data, after the 2 × count JEntries.
    #[inline(always)]
    fn data(&self) -> *const u8 {
        unsafe { self.root.as_ptr().add(1 + 2 * self.count()) as *const u8 }
    }

    /// Start of child `i`'s data (getJsonbOffset): lengths summed back to the nearest entry
    /// that stores its end offset (one in every [`JB_OFFSET_STRIDE`]).
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
        (e & JENTRY_TYPEMASK, off, end_of(e, off) - off)
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.data().add(off), len) }
    }

    /// The index of the pair whose key is `key`. Keys are sorted by length, then bytes: an object
    /// of one offset stride (32 pairs) is scanned with a running offset, lengths first and bytes
    /// compared only at equal lengths; a larger one is binary searched.
    fn find(&self, key: &[u8]) -> Option<usize> {
        if self.count() > JB_OFFSET_STRIDE {
            return self.search(key);
        }
        let mut off = 0usize;
        for i in 0..self.count() {
            let end = end_of(self.entry(i), off);
            let len = end - off;
            if len > key.len() {
                return None;
            }
            if len == key.len() && same_bytes(self.bytes(off, len), key) {
                return Some(i);
            }
            off = end;
        }
        None
    }

    /// `Context::each_of` for an object of one offset stride: its keys and `names` are in the
    /// same order (length, then bytes), so one pass over the keys with a running offset meets
    /// every name, or passes the place where a missing one would be.
    #[inline(always)]
    fn each_of(&self, names: &[String], mut f: impl FnMut(usize, &Attr<'_>) -> bool) -> bool {
        let count = self.count();
        let mut n = 0;
        // The running starts of key i and of its value (the values follow the keys).
        let (mut off, mut value_off) = (0usize, self.offset(count));
        for i in 0..count {
            let Some(name) = names.get(n).map(|s| s.as_bytes()) else { return true };
            let end = end_of(self.entry(i), off);
            let value_entry = self.entry(count + i);
            let value_end = end_of(value_entry, value_off);
            let len = end - off;
            if name.len() < len {
                return false;
            }
            if name.len() == len {
                let key = self.bytes(off, len);
                if same_bytes(key, name) {
                    // This key's value, for the name and its repeats.
                    // Built where it stays (`value_into`); dropped only when it owns memory (the
                    // drop of an `Attr` dispatches on its kind through a jump table).
                    let mut slot = MaybeUninit::uninit();
                    let owns = unsafe { self.value_into(value_entry & JENTRY_TYPEMASK, value_off, value_end - value_off, &mut slot) };
                    // SAFETY: value_into wrote it.
                    let value = unsafe { slot.assume_init_ref() };
                    let accepted = loop {
                        let accepted = f(n, value);
                        n += 1;
                        if !accepted || !names.get(n).is_some_and(|m| same_bytes(m.as_bytes(), key)) {
                            break accepted;
                        }
                    };
                    if owns {
                        // SAFETY: written by value_into, dropped once, not used after.
                        unsafe { slot.assume_init_drop() };
                    }
                    if !accepted {
                        return false;
                    }
                } else if name < key {
                    return false;
                }
            }
            off = end;
            value_off = value_end;
        }
        n == names.len()
    }

    /// `find` by binary search.
    fn search(&self, key: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count());
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

    /// The value of pair `i` (numbers digit for digit as jsonb prints them, 2.0 stays 2.0; a
    /// nested array or object printed and parsed, as rare as dotted paths). Borrowed from the
    /// datum, which outlives the call.
    #[inline(always)]
    unsafe fn value<'a>(&self, i: usize) -> Attr<'a> {
        let (kind, off, len) = self.child(self.count() + i);
        let mut value = MaybeUninit::uninit();
        unsafe { self.value_into(kind, off, len, &mut value) };
        unsafe { value.assume_init() }
    }

    /// Writes the value of type bits `kind` whose data is `len` bytes at `off` into `out`, and
    /// says whether it owns memory (a number with a fraction, a container, text that is not
    /// UTF-8). Written in place, field by field: a value built and then moved was copied in
    /// pieces that the next reads of it stalled on (store forwarding fails on loads spanning
    /// several stores: half of a condition's cost).
    #[inline(always)]
    unsafe fn value_into<'a>(&self, kind: u32, off: usize, len: usize, out: &mut MaybeUninit<Attr<'a>>) -> bool {
        let data = self.data();
        // Numerics and containers start at the next 4-byte boundary (INTALIGN); computed only
        // for them (a string's padding may lie past the object's end).
        let aligned = || unsafe { data.add(off.next_multiple_of(4)) };
        match kind {
            // jsonb text is in the database encoding; pg_ab requires UTF-8.
            JENTRY_ISSTRING => {
                let bytes = unsafe { std::slice::from_raw_parts(data.add(off), len) };
                // Attributes are mostly ASCII: checked word by word, then no UTF-8 decoding.
                let text = if bytes.is_ascii() { Ok(unsafe { std::str::from_utf8_unchecked(bytes) }) } else { std::str::from_utf8(bytes) };
                match text {
                    Ok(t) => {
                        out.write(Attr::String(Cow::Borrowed(t)));
                        false
                    }
                    Err(_) => {
                        out.write(Attr::String(String::from_utf8_lossy(bytes)));
                        true
                    }
                }
            }
            JENTRY_ISNUMERIC => match unsafe { numeric_value(aligned()) } {
                Ok(n) => {
                    out.write(Attr::Integer(n));
                    false
                }
                Err(other) => {
                    out.write(other);
                    true
                }
            },
            JENTRY_ISBOOL_FALSE => {
                out.write(Attr::Bool(false));
                false
            }
            JENTRY_ISBOOL_TRUE => {
                out.write(Attr::Bool(true));
                false
            }
            JENTRY_ISCONTAINER => {
                out.write(unsafe { container_value(aligned()) });
                true
            }
            _ => {
                out.write(Attr::Null);
                false
            }
        }
    }
}

/// A numeric value: a whole number of up to 16 digits by value (`Ok`), others by their text
/// (owned; NaN and the infinities, which JSON cannot hold, as null). Out of line: the pass over
/// a context's keys stays small.
///
/// # Safety
/// `p` must point to a numeric datum of the context.
#[inline(never)]
unsafe fn numeric_value<'a>(p: *const u8) -> Result<i64, Attr<'a>> {
    match unsafe { numeric_parts(p) } {
        Some(n) => numeric_integer(&n).ok_or_else(|| Attr::Number(Cow::Owned(numeric_text(&n)))),
        None => {
            let datum = pg_sys::Datum::from(p as pg_sys::Numeric);
            let text = unsafe { pgrx::direct_function_call::<&CStr>(pg_sys::numeric_out, &[Some(datum)]) };
            // NaN and the infinities (which JSON cannot hold) are no number.
            let number = text.and_then(|t| t.to_str().ok()).filter(|t| t.starts_with(|c: char| c == '-' || c.is_ascii_digit()));
            Err(number.map_or(Attr::Null, |t| Attr::Number(Cow::Owned(t.to_string()))))
        }
    }
}

/// A nested array or object, printed and parsed (as rare as dotted paths).
///
/// # Safety
/// `p` must point to a container of the context.
#[cold]
unsafe fn container_value<'a>(p: *const u8) -> Attr<'a> {
    Attr::owned(parse(&unsafe { container_text(p as *mut pg_sys::JsonbContainer) }))
}

/// The end of a child's data from its JEntry and its start: the end offset it stores (one in
/// every [`JB_OFFSET_STRIDE`] entries), else start plus the length it stores.
#[inline(always)]
fn end_of(entry: u32, start: usize) -> usize {
    let n = (entry & JENTRY_OFFLENMASK) as usize;
    if entry & JENTRY_HAS_OFF != 0 { n } else { start + n }
}

// A numeric's binary form (utils/adt/numeric.c, stable on disk): a varlena header, a 16-bit
// header word (short form: sign, display scale and weight packed; long form: sign and display
// scale, then a 16-bit weight), then base-10000 digits, most significant first.
const NUMERIC_SIGN_MASK: u16 = 0xC000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SPECIAL: u16 = 0xC000;
const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_DSCALE_MASK: u16 = 0x1F80;
const NUMERIC_SHORT_DSCALE_SHIFT: u16 = 7;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;

/// A numeric's parts, read in place (numeric.c's NumericVar without copying the digits).
struct NumericParts<'a> {
    negative: bool,
    /// Digits after the decimal point `numeric_out` prints.
    dscale: u16,
    /// The first base-10000 digit's power of 10000.
    weight: i32,
    /// The base-10000 digits, native-endian 16-bit words, most significant first (trailing zero
    /// digits are not stored).
    digits: &'a [u8],
}

impl NumericParts<'_> {
    /// Base-10000 digit `d` (0 outside the stored ones).
    fn digit(&self, d: i32) -> u16 {
        // Negative positions (the zeroes after the point of a number below 1) hold no digit.
        let Ok(d) = usize::try_from(d) else { return 0 };
        match self.digits.get(2 * d..2 * d + 2) {
            Some(&[hi, lo]) => u16::from_ne_bytes([hi, lo]),
            _ => 0,
        }
    }
}

/// A numeric datum's parts; `None` for NaN and the infinities (which JSON cannot hold) and on a
/// big-endian platform (whose varlena layout differs: callers use `numeric_out` there).
///
/// # Safety
/// `p` must point to a numeric datum (with its varlena header) that outlives `'a`.
unsafe fn numeric_parts<'a>(p: *const u8) -> Option<NumericParts<'a>> {
    // The varlena header (postgres.h, little-endian layout): 1 byte when its low bit is set
    // (size in the other 7), else 4 (size in the upper 30 bits).
    let first = unsafe { *p };
    let (header_len, total) = if cfg!(target_endian = "little") && first & 0x01 == 0x01 {
        (1usize, (first >> 1) as usize)
    } else if cfg!(target_endian = "little") {
        (4, (unsafe { std::ptr::read_unaligned(p as *const u32) } >> 2) as usize & 0x3FFF_FFFF)
    } else {
        return None;
    };
    let body = unsafe { std::slice::from_raw_parts(p.add(header_len), total.checked_sub(header_len)?) };
    let word = |i: usize| -> Option<u16> { Some(u16::from_ne_bytes([*body.get(i)?, *body.get(i + 1)?])) };
    let head = word(0)?;
    let (negative, dscale, weight, digits_at) = match head & NUMERIC_SIGN_MASK {
        NUMERIC_SPECIAL => return None,
        NUMERIC_SHORT => {
            let weight = if head & NUMERIC_SHORT_WEIGHT_SIGN_MASK != 0 { !NUMERIC_SHORT_WEIGHT_MASK as i16 } else { 0 } | (head & NUMERIC_SHORT_WEIGHT_MASK) as i16;
            (head & NUMERIC_SHORT_SIGN_MASK != 0, (head & NUMERIC_SHORT_DSCALE_MASK) >> NUMERIC_SHORT_DSCALE_SHIFT, weight as i32, 2)
        }
        sign => (sign == NUMERIC_NEG, head & NUMERIC_DSCALE_MASK, word(2)? as i16 as i32, 4),
    };
    let stored = (body.len() - digits_at.min(body.len())) / 2;
    Some(NumericParts { negative, dscale, weight, digits: &body[digits_at.min(body.len())..][..2 * stored] })
}

/// A numeric without a fractional part (display scale 0) of at most 16 decimal digits, by value:
/// `numeric_out` would print it as the same integer's decimal text.
fn numeric_integer(n: &NumericParts) -> Option<i64> {
    // Four base-10000 digits are 16 decimal digits: below 2^63, no overflow.
    if n.dscale != 0 || n.weight > 3 {
        return None;
    }
    let mut value: i64 = 0;
    for d in 0..=n.weight {
        value = value * 10_000 + i64::from(n.digit(d));
    }
    Some(if n.negative { -value } else { value })
}

/// A numeric as `numeric_out` prints it (numeric.c's get_str_from_var: every digit of the
/// integer part, the display scale's digits after the point), from its parts: no call into
/// PostgreSQL.
fn numeric_text(n: &NumericParts) -> String {
    let (weight, dscale) = (n.weight, n.dscale);
    let mut out = String::with_capacity(8 + 4 * (weight.max(0) as usize + 1) + dscale as usize);
    if n.negative {
        out.push('-');
    }
    let mut d = 0;
    if weight < 0 {
        d = weight + 1;
        out.push('0');
    } else {
        while d <= weight {
            // The first base-10000 digit without its leading zeroes, the others with all four.
            push_digits(&mut out, n.digit(d), d > 0);
            d += 1;
        }
    }
    if dscale > 0 {
        out.push('.');
        let end = out.len() + dscale as usize;
        while out.len() < end {
            push_digits(&mut out, n.digit(d), true);
            d += 1;
        }
        out.truncate(end);
    }
    out
}

/// One base-10000 digit as four decimal digits, or without its leading zeroes (`all` false).
fn push_digits(out: &mut String, dig: u16, all: bool) {
    let mut started = all;
    for unit in [1000, 100, 10, 1] {
        let x = (dig / unit % 10) as u8;
        started |= x > 0 || unit == 1;
        if started {
            out.push((b'0' + x) as char);
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
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or(Context::none()) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        Nullable::Valid(unsafe { arg.unbox_arg_using_from_datum().unwrap_or(Context::none()) })
    }
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(Context, arg_only = "jsonb");
