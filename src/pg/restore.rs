//! Telling a restore from a change. pg_restore and psql load a dump's rows with COPY, after
//! CREATE EXTENSION has made the tables and their triggers; the audit and event triggers
//! (sql/schema.sql) must not describe those rows as changes nobody made, and the events keep
//! the ids they were dumped with.

use pgrx::prelude::*;

/// `ab.restoring()`: true while the client's current statement is a COPY (the portal's command
/// tag), i.e. rows are being loaded, not changed through pg_ab's API or SQL DML. A COPY run from
/// inside a function is not seen (its portal is the caller's), so it is audited as usual.
#[pg_extern(volatile, parallel_restricted)]
fn restoring() -> bool {
    // ActivePortal is the portal of the client's statement while it runs (NULL between them).
    unsafe {
        let portal = pg_sys::ActivePortal;
        !portal.is_null() && (*portal).commandTag == pg_sys::CommandTag::CMDTAG_COPY
    }
}
