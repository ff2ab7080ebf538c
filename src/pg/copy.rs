//! COPY FROM memory: rows already in COPY's text format handed to PostgreSQL's own COPY FROM
//! (`BeginCopyFrom` with a data source callback and `CopyFrom`, as logical replication's table
//! sync calls them), so a batch takes COPY's insert path — partition routing, CHECKs, indexes,
//! and statement triggers once — instead of an `INSERT … SELECT` over arrays built for it.

use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CString;

thread_local! {
    /// The rows COPY is reading and how far it has read: the callback has no argument of its own.
    static SOURCE: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// COPY's data source: the next bytes of [`SOURCE`], 0 at the end.
unsafe extern "C-unwind" fn read_source(outbuf: *mut std::ffi::c_void, _minread: i32, maxread: i32) -> i32 {
    SOURCE.with(|s| {
        let mut s = s.borrow_mut();
        let (data, at) = &mut *s;
        let n = (data.len() - *at).min(maxread.max(0) as usize);
        // Safety: COPY hands a buffer of at least maxread bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(*at), outbuf.cast::<u8>(), n) };
        *at += n;
        n as i32
    })
}

/// Copies `rows` (COPY text format, one line per row, `columns` in order, in the database's
/// encoding) into `schema.table` as the current user: INSERT privilege is checked as COPY checks
/// it (42501), and a read-only transaction refuses, naming `command` (25006). Returns the rows COPY stored (a
/// BEFORE INSERT row trigger returning NULL stores fewer). None, with nothing done, when the
/// table has row-level security on for this user: COPY FROM does not apply policies, so the
/// caller must insert with a statement.
pub fn copy_from_memory(command: &std::ffi::CStr, schema: &str, table: &str, columns: &[&str], rows: Vec<u8>) -> Option<u64> {
    let schema = CString::new(schema).unwrap_or_default();
    let table_name = CString::new(table).unwrap_or_default();
    unsafe {
        let relid = pg_sys::get_relname_relid(table_name.as_ptr(), pg_sys::get_namespace_oid(schema.as_ptr(), false));
        if relid == pg_sys::InvalidOid {
            super::error::raise(crate::error::AbError::undefined(format!("table {}.{} does not exist", schema.to_string_lossy(), table_name.to_string_lossy())));
        }
        if pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, false) == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
            return None;
        }
        if pg_sys::XactReadOnly {
            pg_sys::PreventCommandIfReadOnly(command.as_ptr());
        }
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(relid, lock);
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        let item = pg_sys::addRangeTableEntryForRelation(pstate, rel, lock, std::ptr::null_mut(), false, false);
        let rte = (*item).p_rte;
        (*rte).requiredPerms = pg_sys::ACL_INSERT as pg_sys::AclMode;
        let mut names: *mut pg_sys::List = std::ptr::null_mut();
        let desc = (*rel).rd_att;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        for c in columns {
            let name = CString::new(*c).unwrap_or_default();
            names = pg_sys::lappend(names, pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast());
            if let Some(i) = attrs.iter().position(|a| !a.attisdropped && pgrx::name_data_to_str(&a.attname) == *c) {
                let attnum = i as i32 + 1;
                (*rte).insertedCols = pg_sys::bms_add_member((*rte).insertedCols, attnum - pg_sys::FirstLowInvalidHeapAttributeNumber);
            }
        }
        pg_sys::ExecCheckRTPerms((*pstate).p_rtable, true);
        // The rows are in the database's encoding, whatever the client's.
        let encoding = pg_sys::makeDefElem(c"encoding".as_ptr().cast_mut(), pg_sys::makeString(pg_sys::pstrdup(pg_sys::GetDatabaseEncodingName())).cast(), -1);
        let options = pg_sys::lappend(std::ptr::null_mut(), encoding.cast());
        SOURCE.with(|s| *s.borrow_mut() = (rows, 0));
        let state = pg_sys::BeginCopyFrom(pstate, rel, std::ptr::null_mut(), std::ptr::null(), false, Some(read_source), names, options);
        let stored = pg_sys::CopyFrom(state);
        pg_sys::EndCopyFrom(state);
        SOURCE.with(|s| *s.borrow_mut() = (Vec::new(), 0));
        pg_sys::free_parsestate(pstate);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        Some(stored)
    }
}
