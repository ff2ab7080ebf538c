//! SQL API of assignment: the read-only hot path and its logging companion.

use super::error::{raise, require_primary, required, OrRaise};
use super::ffi::{finfo_v1, text_arg};
use super::context::Context;
use super::targeting;
use super::cache;
use super::store;
use crate::experiments::assign::{self as logic, Assignment, Reason, TestConfig};
use crate::experiments::lifecycle::unknown_test;
use crate::error::{AbError, Kind};
use crate::targeting::attributes::{Attributes, NoAttributes};
use std::rc::Rc;
use pgrx::pg_sys;
use pgrx::pg_guard;

// pgrx reads SQL signatures from tokens, so #[pg_extern] functions spell this type out.
/// The `ab.assignment` composite (sql/assign.sql), built by hand: pgrx's set-returning path
/// costs over a microsecond a call, more than everything else in an assignment together.
mod composite {
    use super::super::ffi::Varlenas;
    use crate::experiments::assign::Assignment;
    use pgrx::pg_sys;
    use std::cell::Cell;

    thread_local! {
        /// The row type's descriptor, copied into TopMemoryContext once per backend and type,
        /// and again after a relcache invalidation (`ALTER EXTENSION pg_ab UPDATE` adding
        /// `payload` sends one for the type): no type-cache lookup per call.
        static TUPDESC: Cell<(pg_sys::Oid, pg_sys::TupleDesc)> =
            const { Cell::new((pg_sys::InvalidOid, std::ptr::null_mut())) };
    }

    unsafe fn tupdesc(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::TupleDesc {
        let typoid = unsafe { pg_sys::get_fn_expr_rettype((*fcinfo).flinfo) };
        let (cached_oid, cached) = TUPDESC.with(|t| t.get());
        let changed = super::super::cache::take_row_type_change();
        if cached_oid == typoid && !cached.is_null() && !changed {
            return cached;
        }
        if !cached.is_null() {
            unsafe { pg_sys::FreeTupleDesc(cached) };
            TUPDESC.with(|t| t.set((pg_sys::InvalidOid, std::ptr::null_mut())));
        }
        let desc = unsafe {
            let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            let d = pg_sys::lookup_rowtype_tupdesc_copy(typoid, -1);
            pg_sys::MemoryContextSwitchTo(old);
            d
        };
        TUPDESC.with(|t| t.set((typoid, desc)));
        desc
    }

    /// (test_id, variant, confidence_threshold, in_rollout, reason, payload); `None` gives a row
    /// of NULLs with the reason only. A row type of five attributes (0.1.0's, before `ALTER
    /// EXTENSION pg_ab UPDATE`) gets no payload.
    pub unsafe fn datum(fcinfo: pg_sys::FunctionCallInfo, a: Option<&Assignment>, reason: &str) -> pg_sys::Datum {
        let desc = unsafe { tupdesc(fcinfo) };
        let mut texts = Varlenas::with_capacity(256);
        let mut values = [pg_sys::Datum::from(0usize); 6];
        let mut nulls = [true, true, true, false, false, true];
        let mut offsets = [None; 3];
        if let Some(a) = a {
            offsets[0] = Some(texts.push_str(a.test_id));
            offsets[1] = Some(texts.push_str(a.variant));
            values[2] = pg_sys::Datum::from(a.confidence_threshold.to_bits() as usize);
            values[3] = pg_sys::Datum::from(a.in_rollout);
            nulls = [false, false, false, false, false, true];
            if let (Some(p), true) = (a.payload, unsafe { (*desc).natts } >= 6) {
                if let Some(d) = pgrx::IntoDatum::into_datum(pgrx::JsonB(p.clone())) {
                    values[5] = d;
                    nulls[5] = false;
                }
            }
        } else {
            values[3] = pg_sys::Datum::from(false);
        }
        offsets[2] = Some(texts.push_str(reason));
        for (slot, off) in [0, 1, 4].into_iter().zip(offsets) {
            if let Some(off) = off {
                values[slot] = texts.datum(off);
            }
        }
        unsafe {
            let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
        }
    }
}

fn row(fcinfo: pg_sys::FunctionCallInfo, a: &Assignment) -> pg_sys::Datum {
    unsafe { composite::datum(fcinfo, Some(a), a.reason.as_str()) }
}

finfo_v1!(
    pg_finfo_pg_ab_assign,
    pg_finfo_pg_ab_assign_and_log,
    pg_finfo_pg_ab_get_assignment,
    pg_finfo_pg_ab_get_champion_assignment,
    pg_finfo_pg_ab_assign_in_context,
    pg_finfo_pg_ab_get_assignment_in_context,
    pg_finfo_pg_ab_assign_and_log_in_context
);

/// The jsonb `context` argument `n`, unread (NULL: none; not an object: 22023).
unsafe fn context_arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Context {
    let arg = unsafe { *(*fcinfo).args.as_ptr().add(n) };
    unsafe { Context::from_datum(arg.value, arg.isnull) }
}

/// The unit being assigned: the user, or the session for anonymous traffic.
pub(crate) fn unit_of<'a>(user_id: Option<&'a str>, session_id: Option<&'a str>) -> &'a str {
    user_id.or(session_id).unwrap_or_else(|| {
        raise(AbError::new(Kind::NullValue, "user_id and session_id are both NULL")
            .with_hint("pass a user id, or a session id for anonymous traffic"))
    })
}

/// A test's configuration from the backend's cache; an unknown test is an error.
pub(crate) fn load_test(test_id: &str) -> Rc<TestConfig> {
    cache::test(test_id).unwrap_or_else(|| raise(unknown_test(test_id)))
}

/// The stored assignment of a sticky test, when one exists for the current bucket version.
fn stored_variant(test: &TestConfig, unit: &str) -> Option<String> {
    store::json_one_ro(
        "SELECT to_jsonb(variant) FROM ab.assignments WHERE test_id = $1 AND unit_id = $2 AND bucket_version = $3",
        &[test.test_id.as_str().into(), unit.into(), test.bucket_version.into()],
    )
    .and_then(|v| v.as_str().map(String::from))
}

/// Assignment without writing: rollout, weights, and sticky assignments already stored.
pub(crate) fn decide<'a>(test: &'a TestConfig, unit: &str) -> Assignment<'a> {
    decide_in(test, unit, &NoAttributes)
}

/// `decide` with the unit's attributes for the test's targeting (asked only for a targeted test).
pub(crate) fn decide_in<'a>(test: &'a TestConfig, unit: &str, attributes: &dyn Attributes) -> Assignment<'a> {
    let a = logic::assign_targeted(test, unit, &cache::flag, &|t| targeting::decide_test(t, unit, attributes));
    if a.reason == Reason::Split && test.sticky {
        if let Some(stored) = stored_variant(test, unit) {
            return logic::with_stored(test, a, &stored);
        }
    }
    a
}

fn assign_and_log_inner(
    fcinfo: pg_sys::FunctionCallInfo,
    test_id: &str,
    unit: &str,
    session_id: Option<&str>,
    attributes: &dyn Attributes,
) -> pg_sys::Datum {
    let test = load_test(test_id);
    let mut a = decide_in(&test, unit, attributes);
    if a.reason == Reason::Split && test.sticky {
        logic::check_stored_unit_id(unit).or_raise();
        // Insert-if-absent; a row from an older bucket version is replaced.
        let kept = store::json_one(
            include_str!("queries/store_assignment.sql"),
            &[test_id.into(), unit.into(), a.variant.into(), test.bucket_version.into()],
        );
        if kept.is_none() {
            // A concurrent caller stored this unit first: follow it.
            if let Some(stored) = store::json_one(
                "SELECT to_jsonb(variant) FROM ab.assignments WHERE test_id = $1 AND unit_id = $2",
                &[test_id.into(), unit.into()],
            )
            .and_then(|v| v.as_str().map(String::from))
            {
                a = logic::with_stored(&test, a, &stored);
            }
        }
    }
    if test.log_exposures {
        store::exec(
            "INSERT INTO ab.exposures (test_id, unit_id, session_id, variant, in_rollout, reason)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[test_id.into(), unit.into(), session_id.into(), a.variant.into(), a.in_rollout.into(), a.reason.as_str().into()],
        );
    }
    row(fcinfo, &a)
}

/// The active test whose traffic slice holds this unit (rendezvous hashing), if any.
pub(crate) fn slice_test(unit: &str) -> Option<Rc<TestConfig>> {
    let ids = cache::active_tests();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    logic::pick_slice(&refs, unit).map(load_test)
}

/// The default test (ab.set_default_test; else the oldest active test; else the oldest test).
pub(crate) fn default_test() -> Option<Rc<TestConfig>> {
    let id = cache::default_test_id();
    Some(load_test(id.as_deref()?))
}

/// The default test's champion; with no test at all, NULLs and reason `no_test`.
fn champion_row(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    cache::accept_invalidations();
    let Some(t) = default_test() else {
        return unsafe { composite::datum(fcinfo, None, "no_test") };
    };
    row(fcinfo, &logic::default_champion(&t))
}

/// `ab.assign(test_id, user_id, session_id)`: deterministic and read-only.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_assign(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let (test_id, user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1), text_arg(fcinfo, 2)) };
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    row(fcinfo, &decide(&load_test(test_id), unit))
}

/// `ab.assign_and_log(...)`: stores the first assignment of a sticky test and logs the exposure
/// (when the test asks for it) in the caller's transaction, so assignments and their log cannot
/// drift apart.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_assign_and_log(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    require_primary("ab.assign_and_log");
    let (test_id, user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1), text_arg(fcinfo, 2)) };
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    assign_and_log_inner(fcinfo, test_id, unit, session_id, &NoAttributes)
}

/// `ab.assign_and_log(test_id, user_id, session_id, context)`: `assign_and_log` with the unit's
/// attributes for the test's targeting.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_assign_and_log_in_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    require_primary("ab.assign_and_log");
    let (test_id, user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1), text_arg(fcinfo, 2)) };
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    let context = unsafe { context_arg(fcinfo, 3) };
    cache::accept_invalidations();
    assign_and_log_inner(fcinfo, test_id, unit, session_id, &context)
}

/// `ab.get_assignment(user_id, session_id)`: the seed's call without a test. Active tests share
/// traffic as mutually exclusive slices (rendezvous hashing on the unit).
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_get_assignment(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let (user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1)) };
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    match slice_test(unit) {
        Some(test) => row(fcinfo, &decide(&test, unit)),
        None => champion_row(fcinfo),
    }
}

/// `ab.get_champion_assignment()`: the default test's champion (ab.set_default_test; else the
/// oldest active test; else the oldest test); with no test, NULLs and reason `no_test`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_get_champion_assignment(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    champion_row(fcinfo)
}

/// `ab.assign_variant(test_id, user_id)`: only the variant of `ab.assign`, as a scalar — the
/// cheapest form for callers that need nothing else (no FunctionScan, no row type).
#[pgrx::pg_extern(stable, parallel_safe)]
fn assign_variant(test_id: Option<&str>, user_id: Option<&str>, session_id: pgrx::default!(Option<&str>, "NULL")) -> String {
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    let test = load_test(test_id);
    decide(&test, unit).variant.to_string()
}

/// `ab.assign(test_id, user_id, session_id, context)`: `assign` with the unit's attributes for
/// the test's audience and forced-variant rules.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_assign_in_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let (test_id, user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1), text_arg(fcinfo, 2)) };
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    let context = unsafe { context_arg(fcinfo, 3) };
    cache::accept_invalidations();
    let test = load_test(test_id);
    row(fcinfo, &decide_in(&test, unit, &context))
}

/// `ab.get_assignment(user_id, session_id, context)`: `get_assignment` with the unit's
/// attributes.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_ab_get_assignment_in_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let (user_id, session_id) = unsafe { (text_arg(fcinfo, 0), text_arg(fcinfo, 1)) };
    let unit = unit_of(user_id, session_id);
    let context = unsafe { context_arg(fcinfo, 2) };
    cache::accept_invalidations();
    match slice_test(unit) {
        Some(test) => row(fcinfo, &decide_in(&test, unit, &context)),
        None => champion_row(fcinfo),
    }
}

/// `ab.assign_variant(test_id, user_id, session_id, context)`: the variant of `assign` with a
/// context.
#[pgrx::pg_extern(stable, parallel_safe, name = "assign_variant")]
fn assign_variant_in_context(test_id: Option<&str>, user_id: Option<&str>, session_id: Option<&str>, context: Option<Context>) -> String {
    let test_id = required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    let test = load_test(test_id);
    decide_in(&test, unit, &context.unwrap_or(Context::none())).variant.to_string()
}

/// `ab.get_payload(test_id, user_id, context)`: the payload of the variant `assign` gives the
/// unit (NULL when that variant has none) — the model settings to run, in one call.
#[pgrx::pg_extern(stable, parallel_safe)]
fn get_payload(test_id: Option<&str>, user_id: Option<&str>, context: pgrx::default!(Option<Context>, "NULL")) -> Option<pgrx::JsonB> {
    let test_id = required(test_id, "test_id");
    let unit = required(user_id, "user_id");
    let attributes = context.unwrap_or(Context::none());
    cache::accept_invalidations();
    let test = load_test(test_id);
    decide_in(&test, unit, &attributes).payload.map(|p| pgrx::JsonB(p.clone()))
}

/// `ab.explain_assignment(test_id, user_id, context)`: what `assign` gives the unit and why, as
/// `{"test_id", "variant", "reason", "in_rollout", "payload", "status", "targeting"}`;
/// `targeting` (null for a test without targeting) is the unit's override that applied, else
/// the forced-variant rules looked at and the audience's verdict with the attribute values they
/// read (`targeting::rules::TestTargeting::explain`), and `asked`: targeting is asked only while
/// the test is active and its switches let the unit in, and is shown for any status (`asked`
/// false: what it would decide, not what decided).
#[pgrx::pg_extern(stable, parallel_safe)]
fn explain_assignment(test_id: Option<&str>, user_id: Option<&str>, context: pgrx::default!(Option<Context>, "NULL")) -> pgrx::JsonB {
    let test_id = required(test_id, "test_id");
    let unit = required(user_id, "user_id");
    let attributes = context.unwrap_or(Context::none());
    cache::accept_invalidations();
    let test = load_test(test_id);
    let a = decide_in(&test, unit, &attributes);
    let targeting = if test.targeted {
        let mut t = targeting::explain_test(&test, unit, &attributes);
        t["asked"] = serde_json::Value::Bool(a.reason.after_targeting());
        t
    } else {
        serde_json::Value::Null
    };
    pgrx::JsonB(serde_json::json!({
        "test_id": a.test_id, "variant": a.variant, "reason": a.reason.as_str(), "in_rollout": a.in_rollout,
        "payload": a.payload, "status": test.status.as_str(), "targeting": targeting,
    }))
}
