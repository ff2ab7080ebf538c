//! SPI: the helpers every SQL function runs its statements with (plans kept per backend for the
//! per-request paths, jsonb results, errors raised), the reads of configuration the caches and
//! the lifecycle share, and the outbox insert. The statements themselves are in queries/*.sql
//! when longer than two lines, else next to the one function that runs them.

use super::error::OrRaise;
use crate::experiments::assign::{test_flag_name, TestConfig, Variant, TEST_FLAG_PREFIX};
use crate::error::AbError;
use crate::experiments::events;
use crate::experiments::bucketing::{Hashing, Scheme};
use crate::experiments::flags::Flag;
use crate::experiments::lifecycle::Status;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde::Deserialize;
use serde_json::Value;

fn first_json(table: pgrx::spi::SpiTupleTable) -> pgrx::spi::Result<Option<Value>> {
    if table.is_empty() {
        return Ok(None);
    }
    Ok(table.first().get_one::<JsonB>()?.map(|j| j.0))
}

thread_local! {
    /// Plans kept for the backend's lifetime for statements on per-request paths; PostgreSQL's
    /// plan cache revalidates them after DDL.
    static PLANS: std::cell::RefCell<std::collections::HashMap<&'static str, std::rc::Rc<pgrx::spi::OwnedPreparedStatement>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn kept_plan(c: &pgrx::spi::SpiClient, sql: &'static str, types: &[pgrx::PgOid], mutating: bool) -> pgrx::spi::Result<std::rc::Rc<pgrx::spi::OwnedPreparedStatement>> {
    if let Some(plan) = PLANS.with(|p| p.borrow().get(sql).cloned()) {
        return Ok(plan);
    }
    let prepared = if mutating { c.prepare_mut(sql, types)? } else { c.prepare(sql, types)? };
    let plan = std::rc::Rc::new(prepared.keep());
    PLANS.with(|p| p.borrow_mut().insert(sql, plan.clone()));
    Ok(plan)
}

/// Runs a read-only query through a plan prepared once per backend and maps every row.
pub fn kept_rows<T>(
    sql: &'static str,
    types: &[pgrx::PgOid],
    args: &[DatumWithOid],
    map: impl Fn(pgrx::spi::SpiHeapTupleData) -> pgrx::spi::Result<T>,
) -> Vec<T> {
    Spi::connect(|c| {
        let plan = kept_plan(c, sql, types, false)?;
        c.select(&*plan, None, args)?.map(map).collect::<pgrx::spi::Result<Vec<T>>>()
    })
    .or_raise()
}

/// Runs `sql` through a plan prepared once per backend; yields the first column of the first
/// row, if any.
pub fn kept_one<T: pgrx::datum::FromDatum + pgrx::IntoDatum>(
    sql: &'static str,
    types: &[pgrx::PgOid],
    mutating: bool,
    args: &[DatumWithOid],
) -> Option<T> {
    Spi::connect_mut(|c| {
        let plan = kept_plan(c, sql, types, mutating)?;
        let table = if mutating { c.update(&*plan, None, args)? } else { c.select(&*plan, None, args)? };
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<T>()
    })
    .or_raise()
}

/// Runs a statement that returns no rows through a plan prepared once per backend.
pub fn kept_exec(sql: &'static str, types: &[pgrx::PgOid], args: &[DatumWithOid]) {
    Spi::connect_mut(|c| {
        let plan = kept_plan(c, sql, types, true)?;
        c.update(&*plan, None, args).map(|_| ())
    })
    .or_raise()
}

/// Runs `sql` through a plan prepared once per backend; yields at most one jsonb value.
pub fn kept_json(sql: &'static str, types: &[pgrx::PgOid], mutating: bool, args: &[DatumWithOid]) -> Option<Value> {
    kept_one::<JsonB>(sql, types, mutating, args).map(|j| j.0)
}

/// The value of a query that always gives one (`gen_random_uuid()`, `pg_current_xact_id()`):
/// `None` would be a bug, reported as an error naming the query rather than replaced by a
/// made-up value.
pub fn some<T>(value: Option<T>, query: &str) -> T {
    value.unwrap_or_else(|| super::error::raise(AbError::wrong_state(format!("pg_ab: no value from {query}"))))
}

/// The value an `INSERT … RETURNING` gave back. No row means a trigger suppressed the insert:
/// an error (55000) naming the table, never a made-up value.
pub fn inserted<T>(value: Option<T>, table: &str) -> T {
    value.unwrap_or_else(|| {
        super::error::raise(
            AbError::wrong_state(format!("the row was not inserted into {table}"))
                .with_hint(format!("a BEFORE INSERT trigger on {table} returned NULL: pg_ab needs every row it writes there")),
        )
    })
}

/// Runs a statement that yields at most one jsonb value (read-write).
pub fn json_one(sql: &str, args: &[DatumWithOid]) -> Option<Value> {
    // No row limit: a limit stops UPDATE … RETURNING early, and PostgreSQL then never fires
    // the statement-level triggers that invalidate the cache.
    Spi::connect_mut(|c| first_json(c.update(sql, None, args)?)).or_raise()
}

/// Runs a read-only query that yields at most one jsonb value; usable from STABLE functions.
pub fn json_one_ro(sql: &str, args: &[DatumWithOid]) -> Option<Value> {
    Spi::connect(|c| first_json(c.select(sql, Some(1), args)?)).or_raise()
}

pub fn exec(sql: &str, args: &[DatumWithOid]) {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ())).or_raise()
}

/// Number of rows a statement touched.
pub fn exec_count(sql: &str, args: &[DatumWithOid]) -> usize {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|t| t.len())).or_raise()
}

pub fn deserialize<T: for<'de> Deserialize<'de>>(v: Value, what: &str) -> T {
    serde_json::from_value(v)
        .map_err(|e| AbError::invalid(format!("pg_ab: unreadable {what}: {e}")))
        .or_raise()
}

#[derive(Deserialize)]
struct FlagRow {
    name: String,
    rollout_percentage: i32,
    enabled: bool,
    depends_on: Vec<String>,
    targeted: bool,
    hashing: String,
    hashing_seed: Option<String>,
}

impl From<FlagRow> for Flag {
    fn from(r: FlagRow) -> Flag {
        let hashing = hashing_of(&r.hashing, r.hashing_seed);
        Flag { name: r.name, rollout_percentage: r.rollout_percentage, enabled: r.enabled, depends_on: r.depends_on, targeted: r.targeted, hashing, targeting: Default::default() }
    }
}

/// A stored scheme and seed (the tables' CHECKs hold them to `Hashing::new`'s rules).
fn hashing_of(scheme: &str, seed: Option<String>) -> Hashing {
    Hashing { scheme: Scheme::parse(scheme).or_raise(), seed }
}

/// What a 0.1.0 schema (no hashing columns) reads instead of them.
const HASHING_0_1_0: &str = "'hashing', 'pg_ab', 'hashing_seed', NULL";

/// `sql` as this database can run it: one still at 0.1.0's schema (before `ALTER EXTENSION pg_ab
/// UPDATE`) has no targeting tables and no payloads, so the expressions that read them become
/// `false` (nothing is targeted) and `NULL` there.
pub(crate) fn for_schema(sql: &'static str, replacements: &[(&str, &str)]) -> std::borrow::Cow<'static, str> {
    if super::targeting::tables_exist() {
        std::borrow::Cow::Borrowed(sql)
    } else {
        std::borrow::Cow::Owned(replacements.iter().fold(sql.to_string(), |s, (from, to)| {
            // A replacement that no longer matches its query would read a missing table.
            assert!(s.contains(from), "pg_ab: a 0.1.0-schema replacement does not match its query");
            s.replace(from, to)
        }))
    }
}

/// What evaluation needs of a flag, with whether it has rules or overrides (`targeted`).
pub fn load_flag(name: &str) -> Option<Flag> {
    let sql = for_schema(
        include_str!("queries/flag.sql"),
        &[
            ("(EXISTS (SELECT 1 FROM ab.flag_rules r WHERE r.flag = f.name) OR EXISTS (SELECT 1 FROM ab.overrides o WHERE o.flag = f.name))", "false"),
            ("'hashing', f.hashing, 'hashing_seed', f.hashing_seed", HASHING_0_1_0),
        ],
    );
    json_one_ro(&sql, &[name.into()]).map(|v| deserialize::<FlagRow>(v, "flag").into())
}

/// Every flag's dependency list, for cycle checks.
pub fn all_dependencies() -> std::collections::HashMap<String, Vec<String>> {
    let v = json_one_ro(
        "SELECT coalesce(jsonb_object_agg(name, depends_on), '{}') FROM ab.flags",
        &[],
    )
    .unwrap_or(Value::Null);
    deserialize(v, "flag dependencies")
}

#[derive(Deserialize)]
struct ConfigRow {
    status: String,
    winner: Option<String>,
    sticky: bool,
    log_exposures: bool,
    bucket_version: i32,
    variants: Vec<(String, f64, f64, Option<Value>)>,
    flag: Option<(i32, bool)>,
    targeted: bool,
    hashing: String,
    hashing_seed: Option<String>,
}

/// What assignment needs about a test, or `None` for an unknown test.
pub fn load_test_config(test_id: &str) -> Option<TestConfig> {
    let sql = for_schema(
        include_str!("queries/test_config.sql"),
        &[
            ("(EXISTS (SELECT 1 FROM ab.test_targeting g WHERE g.test_id = t.test_id)
                 OR EXISTS (SELECT 1 FROM ab.test_overrides o WHERE o.test_id = t.test_id))", "false"),
            ("v.payload", "NULL::jsonb"),
            ("'hashing', t.hashing, 'hashing_seed', t.hashing_seed", HASHING_0_1_0),
        ],
    );
    let row: ConfigRow = deserialize(json_one_ro(&sql, &[test_id.into(), TEST_FLAG_PREFIX.into()])?, "test");
    let flag_name = test_flag_name(test_id);
    Some(TestConfig {
        test_id: test_id.to_string(),
        status: Status::parse(&row.status).or_raise(),
        variants: row
            .variants
            .into_iter()
            .map(|(name, weight, confidence_threshold, payload)| Variant { name, weight, confidence_threshold, payload })
            .collect(),
        winner: row.winner,
        sticky: row.sticky,
        log_exposures: row.log_exposures,
        bucket_version: row.bucket_version,
        targeted: row.targeted,
        hashing: hashing_of(&row.hashing, row.hashing_seed),
        // The test's flag is read for its switch and percentage: the test's hashing buckets.
        flag: row.flag.map(|(pct, enabled)| Flag {
            name: flag_name,
            rollout_percentage: pct,
            enabled,
            depends_on: vec![],
            targeted: false,
            hashing: Hashing::default(),
            targeting: Default::default(),
        }),
    })
}

/// A test's hashing (a fresh snapshot: for the writing functions, after the test's lock).
pub fn test_hashing(test_id: &str) -> Hashing {
    let sql = for_schema(
        "SELECT jsonb_build_array(t.hashing, t.hashing_seed) FROM ab.tests t WHERE t.test_id = $1",
        &[("jsonb_build_array(t.hashing, t.hashing_seed)", "jsonb_build_array('pg_ab', NULL)")],
    );
    let (scheme, seed): (String, Option<String>) = deserialize(json_one(&sql, &[test_id.into()]).unwrap_or(Value::Null), "test hashing");
    hashing_of(&scheme, seed)
}

/// Whether a test with this id exists (a fresh snapshot: for the writing functions).
pub fn test_exists(test_id: &str) -> bool {
    json_one("SELECT to_jsonb(1) FROM ab.tests WHERE test_id = $1", &[test_id.into()]).is_some()
}

/// A test's state for the lifecycle and the analysis.
#[derive(Deserialize)]
pub struct TestRow {
    pub status: String,
    pub champion: String,
    pub current_stage: i32,
    pub rollout_stages: Vec<i32>,
    /// (variant, weight), champion first.
    pub variants: Vec<(String, f64)>,
}

/// Reads a test's row, locking it (`FOR UPDATE`) when `lock`: of concurrent callers that lock,
/// each sees the state the one before left. `None` for an unknown test.
pub fn test_row(test_id: &str, lock: bool) -> Option<TestRow> {
    const READ: &str = include_str!("queries/test_row.sql");
    const LOCK: &str = concat!(include_str!("queries/test_row.sql"), "FOR UPDATE OF t");
    let v = if lock { json_one(LOCK, &[test_id.into()]) } else { json_one_ro(READ, &[test_id.into()]) };
    v.map(|v| deserialize(v, "test"))
}

/// OIDs of the signal relations whose relcache invalidation means "configuration changed" and
/// "hierarchy changed" (sql/cache.sql).
pub fn watched_table_oids() -> [pg_sys::Oid; 2] {
    Spi::connect(|c| {
        let t = c.select("SELECT 'ab.config_signal'::regclass::oid, 'ab.hierarchy_signal'::regclass::oid", Some(1), &[])?;
        let r = t.first();
        let oid = |i| r.get::<pg_sys::Oid>(i).map(|o| o.unwrap_or(pg_sys::InvalidOid));
        Ok::<_, pgrx::spi::Error>([oid(1)?, oid(2)?])
    })
    .or_raise()
}

/// The committed state of ab.hierarchy the active snapshot sees, as (the version table's oid,
/// version, the xid that wrote it): None when this transaction changed the hierarchy itself
/// (that state is not committed, so not for sharing) or the version row is missing.
pub fn hierarchy_version() -> Option<(pg_sys::Oid, i64, u32)> {
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT 'ab.hierarchy_version'::regclass::oid, version, xmin::text::bigint FROM ab.hierarchy_version",
            Some(1),
            &[],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok::<_, pgrx::spi::Error>(Some((r.get::<pg_sys::Oid>(1)?, r.get::<i64>(2)?, r.get::<i64>(3)?)))
    })
    .or_raise();
    let (Some(oid), Some(version), Some(xmin)) = row? else { return None };
    let xmin = xmin as u32;
    let own = unsafe { pg_sys::TransactionIdIsCurrentTransactionId(xmin.into()) };
    (!own).then_some((oid, version, xmin))
}

/// The default test: ab.set_default_test's, else the oldest active test, else the oldest test.
pub fn default_test_id() -> Option<String> {
    json_one_ro(include_str!("queries/default_test.sql"), &[]).and_then(|v| v.as_str().map(String::from))
}

/// Ids of the active tests, sorted.
pub fn active_test_ids() -> Vec<String> {
    deserialize(
        json_one_ro(
            "SELECT coalesce(jsonb_agg(test_id ORDER BY test_id), '[]') FROM ab.tests WHERE status = 'active'",
            &[],
        )
        .unwrap_or(Value::Null),
        "active tests",
    )
}

/// Seconds since the Unix epoch at the start of the transaction (PostgreSQL's `now()`), so every
/// event of one change carries the same time.
pub fn transaction_epoch() -> f64 {
    const UNIX_TO_POSTGRES_EPOCH_SECONDS: f64 = 946_684_800.0;
    let micros = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    micros as f64 / 1e6 + UNIX_TO_POSTGRES_EPOCH_SECONDS
}

/// Appends an event to the outbox; its trigger sends `NOTIFY pg_ab_events, '<id>'`.
pub fn emit_event(kind: &str, test_id: Option<&str>, update_type: &str, data: Value) -> i64 {
    let payload = events::payload(kind, test_id, update_type, data, transaction_epoch());
    insert_event(test_id, update_type, payload)
}

/// Appends an event with a payload of its own shape (risk alerts); `type_` fills the events'
/// `type` column.
pub fn insert_event(test_id: Option<&str>, type_: &str, payload: Value) -> i64 {
    let id = Spi::connect_mut(|c| {
        let t = c.update(
            "INSERT INTO ab.events (test_id, type, payload) VALUES ($1, $2, $3) RETURNING id",
            None,
            &[test_id.into(), type_.into(), JsonB(payload).into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get_one::<i64>()
    })
    .or_raise();
    inserted(id, "ab.events")
}
