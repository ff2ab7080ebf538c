//! The FFI pieces the hand-written C-level functions share (assignment's row functions and the
//! hierarchy's resolvers, which skip pgrx's wrappers for speed): `PG_FUNCTION_INFO_V1`, text
//! arguments, and varlenas laid out in one buffer. Also the type OIDs of prepared statements.

use pgrx::{pg_sys, PgBuiltInOids, PgOid};

pub const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
pub const TEXT_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
pub const FLOAT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID);
pub const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
pub const BOOL: PgOid = PgOid::BuiltIn(PgBuiltInOids::BOOLOID);
pub const FLOAT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID);
pub const INT4_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4ARRAYOID);
pub const BOOL_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::BOOLARRAYOID);
pub const INT2: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT2OID);
pub const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
pub const INT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID);
pub const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);

/// `PG_FUNCTION_INFO_V1(name)` for each hand-written function: PostgreSQL looks the record up
/// as `pg_finfo_<name>`.
macro_rules! finfo_v1 {
    ($($finfo:ident),* $(,)?) => {$(
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record = pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    )*};
}
pub(crate) use finfo_v1;

/// Reads text argument `n`; NULL gives `None`.
///
/// # Safety
/// `fcinfo` is a valid call info with at least `n + 1` arguments, argument `n` of type text.
pub unsafe fn text_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<&'a str> {
    unsafe { pgrx::fcinfo::pg_getarg::<&str>(fcinfo, n) }
}

/// Varlenas with 4-byte headers laid out one after the other in one buffer, each aligned to 8
/// bytes (MAXALIGN). Datums point into the buffer, so take them ([`Varlenas::datum`]) only once
/// every value is written: the buffer does not move after that.
pub struct Varlenas {
    words: Vec<u64>,
}

impl Varlenas {
    /// A buffer for about `bytes` bytes of values.
    pub fn with_capacity(bytes: usize) -> Self {
        Varlenas { words: Vec::with_capacity(bytes.div_ceil(8)) }
    }

    /// Appends a varlena of `size` bytes (header included), its payload written by `fill` into
    /// the bytes after the header; returns its offset for [`Varlenas::datum`].
    pub fn push(&mut self, size: usize, fill: impl FnOnce(&mut [u8])) -> usize {
        let start = self.words.len();
        self.words.resize(start + size.div_ceil(8), 0);
        // SAFETY: u64 has no padding and u8 has alignment 1; the slice covers the new words.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.words[start..].as_mut_ptr().cast::<u8>(), size) };
        fill(bytes);
        // SET_VARSIZE: PostgreSQL's 4-byte header, on little- and big-endian builds alike.
        let header = if cfg!(target_endian = "little") { (size as u32) << 2 } else { size as u32 & 0x3FFF_FFFF };
        bytes[..4].copy_from_slice(&header.to_ne_bytes());
        start
    }

    /// Appends `s` as a text varlena.
    pub fn push_str(&mut self, s: &str) -> usize {
        self.push(pg_sys::VARHDRSZ + s.len(), |out| out[pg_sys::VARHDRSZ..].copy_from_slice(s.as_bytes()))
    }

    /// The datum of the value at `offset`.
    pub fn datum(&self, offset: usize) -> pg_sys::Datum {
        pg_sys::Datum::from(self.words[offset..].as_ptr())
    }
}
