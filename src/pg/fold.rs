//! The statistics fold trigger (`ab.fold_metrics()`, sql/stats.sql): after each statement that
//! inserts into `ab.metrics`, its new rows are read from the transition table in one pass, summed
//! per test, variant and hour (`analysis::fold`), and each group is added to this backend's shard
//! row of `ab.metric_stats` with one upsert through a plan kept per backend. In 0.1.0 this was a
//! PL/pgSQL function running a window, a sort and 25 aggregates per statement (what each costs:
//! BENCHMARKS.md, session 15).

use super::error::raise;
use super::ffi::{FLOAT8, INT2, INT8, INT8_ARRAY, TEXT, TIMESTAMPTZ};
use super::store::kept_exec;
use crate::analysis::fold::{Fold, Group, Kind, MetricRow};
use crate::analysis::stats::Moments;
use crate::error::AbError;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::PgOid;

const UPSERT: &str = include_str!("queries/fold_metric_stats.sql");

/// The columns of `ab.metrics` the fold reads, by name (attribute numbers, 1-based).
struct Columns {
    recorded_at: usize,
    test_id: usize,
    variant: usize,
    kind: usize,
    latency_ms: usize,
    entities_processed: usize,
    average_confidence: usize,
    deduplication_rate: usize,
    extraction_success: usize,
}

impl Columns {
    /// Safety: `desc` is a valid tuple descriptor.
    unsafe fn of(desc: pg_sys::TupleDesc) -> Columns {
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        let find = |name: &str| {
            attrs
                .iter()
                .position(|a| !a.attisdropped && pgrx::name_data_to_str(&a.attname) == name)
                .map(|i| i + 1)
                .unwrap_or_else(|| raise(AbError::new(crate::error::Kind::InvalidDefinition, format!("ab.fold_metrics() fired on a table without column \"{name}\"")).with_hint("the trigger belongs on ab.metrics")))
        };
        Columns {
            recorded_at: find("recorded_at"),
            test_id: find("test_id"),
            variant: find("variant"),
            kind: find("kind"),
            latency_ms: find("latency_ms"),
            entities_processed: find("entities_processed"),
            average_confidence: find("average_confidence"),
            deduplication_rate: find("deduplication_rate"),
            extraction_success: find("extraction_success"),
        }
    }

    fn last(&self) -> usize {
        [self.recorded_at, self.test_id, self.variant, self.kind, self.latency_ms, self.entities_processed, self.average_confidence, self.deduplication_rate, self.extraction_success]
            .into_iter()
            .max()
            .unwrap_or(0)
    }
}

/// The statement trigger on `ab.metrics` (AFTER INSERT, REFERENCING NEW TABLE). Declared in
/// sql/stats.sql, not generated, so that its SQL sits beside the trigger.
#[pg_trigger(sql = false)]
fn fold_metrics<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    let data = trigger.trigger_data();
    if data.tg_newtable.is_null() {
        raise(AbError::new(crate::error::Kind::InvalidDefinition, "ab.fold_metrics() needs the statement's new rows")
            .with_hint("declare the trigger AFTER INSERT ... REFERENCING NEW TABLE AS new_metrics FOR EACH STATEMENT"));
    }
    // Safety: PostgreSQL hands an AFTER statement trigger its relation and, when declared with
    // REFERENCING NEW TABLE, the transition table's tuplestore, valid for this call.
    let fold = unsafe { read_new_rows(data.tg_newtable, (*data.tg_relation).rd_att) };
    let shard = (unsafe { pg_sys::MyProcPid } % 16) as i16;
    // In key order, as the old fold's GROUP BY wrote them: two statements of backends sharing a
    // shard lock the same rows in the same order, so they queue instead of deadlocking.
    let mut groups = fold.groups();
    groups.sort_unstable_by(|a, b| (&a.test_id, &a.variant, a.hour).cmp(&(&b.test_id, &b.variant, b.hour)));
    for g in &groups {
        upsert(g, shard);
    }
    Ok(None)
}

/// Reads every row of the transition table into a fold. The rows are in `ab.metrics`' own row
/// type (PostgreSQL converts a partition's rows to the parent's for a trigger on the parent).
unsafe fn read_new_rows(table: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Fold {
    let cols = Columns::of(desc);
    let last = cols.last() as i32;
    let hour_unit = "hour".into_datum();
    let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
    // A read pointer of our own, rewindable, as a NamedTuplestoreScan takes one: another trigger
    // on the same statement may read the same tuplestore.
    let pointer = pg_sys::tuplestore_alloc_read_pointer(table, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(table, pointer);
    pg_sys::tuplestore_rescan(table);
    let mut fold = Fold::default();
    // Rows of one statement usually share their recorded_at (the default now()): the hour is
    // computed once per distinct value in a row.
    let mut hour_of: Option<(i64, i64)> = None;
    // What a row's reading allocates (date_trunc's lower-cased unit, a detoasted text) is freed
    // with the row: a statement of millions of rows must not hold it all until the trigger ends.
    let per_row = pg_sys::AllocSetContextCreateInternal(
        pg_sys::CurrentMemoryContext,
        c"pg_ab fold row".as_ptr(),
        pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
        pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
        pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
    );
    while pg_sys::tuplestore_gettupleslot(table, true, false, slot) {
        let outer = pg_sys::MemoryContextSwitchTo(per_row);
        if ((*slot).tts_nvalid as i32) < last {
            pg_sys::slot_getsomeattrs_int(slot, last);
        }
        let values = std::slice::from_raw_parts((*slot).tts_values, last as usize);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, last as usize);
        let get = |att: usize| if nulls[att - 1] { None } else { Some(values[att - 1]) };
        // recorded_at, test_id, variant and kind are NOT NULL in ab.metrics.
        let recorded_at = get(cols.recorded_at).map_or(0, |d| d.value() as i64);
        let hour = match hour_of {
            Some((at, hour)) if at == recorded_at => hour,
            _ => {
                let hour = pgrx::direct_function_call::<i64>(pg_sys::timestamptz_trunc, &[hour_unit, Some(pg_sys::Datum::from(recorded_at))]).unwrap_or(recorded_at);
                hour_of = Some((recorded_at, hour));
                hour
            }
        };
        let kind = match text(get(cols.kind)) {
            b"error" => Kind::Error,
            _ => Kind::Extraction, // the column's CHECK allows only 'extraction' besides
        };
        let float = |att: usize| get(att).map(|d| f64::from_bits(d.value() as u64));
        fold.add(&MetricRow {
            test_id: text(get(cols.test_id)),
            variant: text(get(cols.variant)),
            hour,
            recorded_at,
            kind,
            extraction_success: get(cols.extraction_success).map(|d| d.value() != 0),
            latency_ms: float(cols.latency_ms),
            entities_processed: get(cols.entities_processed).map(|d| f64::from(d.value() as i32)),
            average_confidence: float(cols.average_confidence),
            deduplication_rate: float(cols.deduplication_rate),
        });
        pg_sys::MemoryContextSwitchTo(outer);
        pg_sys::MemoryContextReset(per_row);
    }
    pg_sys::MemoryContextDelete(per_row);
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    fold
}

/// The bytes of a text datum (detoasted if it must be; a NULL is empty). Valid until the slot
/// moves to the next row, or the detoasted copy's memory context is reset.
unsafe fn text<'a>(datum: Option<pg_sys::Datum>) -> &'a [u8] {
    let Some(d) = datum else { return b"" };
    let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
    std::slice::from_raw_parts(pgrx::varlena::vardata_any(v) as *const u8, pgrx::varlena::varsize_any_exhdr(v))
}

fn upsert(g: &Group, shard: i16) {
    const TYPES: [PgOid; 25] = [
        TEXT, TEXT, TIMESTAMPTZ, INT2, INT8, INT8, INT8, INT8, FLOAT8, FLOAT8, INT8, FLOAT8, FLOAT8, INT8, FLOAT8, FLOAT8, INT8, FLOAT8, FLOAT8, INT8_ARRAY, TIMESTAMPTZ, FLOAT8,
        FLOAT8, FLOAT8, FLOAT8,
    ];
    // Text as the database's bytes, whatever its encoding.
    let bytes_as_text = |b: &[u8]| unsafe { DatumWithOid::new(pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(b.as_ptr().cast(), b.len() as i32)), pg_sys::TEXTOID) };
    let time = |t: i64| unsafe { DatumWithOid::new(t, pg_sys::TIMESTAMPTZOID) };
    let sums = |m: &Moments| [DatumWithOid::from(m.n as i64), DatumWithOid::from(m.sum), DatumWithOid::from(m.sumsq)];
    let [ln, ls, lq] = sums(&g.latency);
    let [en, es, eq] = sums(&g.entities);
    let [cn, cs, cq] = sums(&g.confidence);
    let [dn, ds, dq] = sums(&g.dedup);
    let args = [
        bytes_as_text(&g.test_id),
        bytes_as_text(&g.variant),
        time(g.hour),
        DatumWithOid::from(shard),
        DatumWithOid::from(g.requests),
        DatumWithOid::from(g.successes),
        DatumWithOid::from(g.errors),
        ln, ls, lq, en, es, eq, cn, cs, cq, dn, ds, dq,
        DatumWithOid::from(g.latency_sketch.clone()),
        time(g.last_recorded_at),
        DatumWithOid::from(g.latency.shift),
        DatumWithOid::from(g.entities.shift),
        DatumWithOid::from(g.confidence.shift),
        DatumWithOid::from(g.dedup.shift),
    ];
    kept_exec(UPSERT, &TYPES, &args);
}
