//! Turning errors into PostgreSQL errors with the right SQLSTATE.

use crate::error::{AbError, Kind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode as Code;

pub fn raise(e: AbError) -> ! {
    let code = match e.kind {
        Kind::InvalidParameter => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        Kind::OutOfRange => Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        Kind::NullValue => Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        Kind::Undefined => Code::ERRCODE_UNDEFINED_OBJECT,
        Kind::Duplicate => Code::ERRCODE_DUPLICATE_OBJECT,
        Kind::InvalidDefinition => Code::ERRCODE_INVALID_OBJECT_DEFINITION,
        Kind::WrongState => Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Kind::TooLarge => Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
    };
    let mut report = ErrorReport::new(code, e.message, "pg_ab");
    if let Some(h) = e.hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// `.or_raise()` on anything that can fail: the error becomes a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, AbError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

impl<T> OrRaise<T> for Result<T, pgrx::spi::Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| {
            ereport!(ERROR, Code::ERRCODE_INTERNAL_ERROR, format!("pg_ab: SPI failed: {e}"));
        })
    }
}

/// A required argument: NULL is an error that names the argument.
pub fn required<T>(value: Option<T>, arg: &str) -> T {
    value.unwrap_or_else(|| {
        raise(AbError::new(Kind::NullValue, format!("{arg} must not be NULL")))
    })
}

/// Refuses a writing function on a hot standby with SQLSTATE 25006 (read_only_sql_transaction),
/// naming the function, before it touches anything. `function` is its SQL name, e.g.
/// `"ab.create_flag"`. After recovery ends `RecoveryInProgress()` is a local flag read, so the
/// check costs nothing on a primary.
pub fn require_primary(function: &str) {
    if unsafe { pg_sys::RecoveryInProgress() } {
        ErrorReport::new(
            Code::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("{function} writes to the database and cannot run on a standby"),
            "pg_ab",
        )
        .set_detail("this server is in recovery (a hot standby): it answers reads only")
        .set_hint(format!("call {function} on the primary; assignment, flag checks, evaluation, health and hierarchy reads work here"))
        .report(PgLogLevel::ERROR);
    }
}

/// `ab.require_primary(function)`: the same check for pg_ab's SQL-language functions.
#[pg_extern(stable, parallel_safe, name = "require_primary")]
fn require_primary_sql(function: &str) {
    require_primary(function)
}
