"""Operating pg_ab for years: a filled database survives pg_dump and pg_restore (custom and plain
formats) with every row and every answer, and ALTER EXTENSION pg_ab UPDATE from every kept
release keeps every row, answers as before and ends with exactly the schema of a fresh install."""
import glob
import json
import os
import re
import uuid

import psycopg
import pytest

from operate import (ROOT, create_database, drop_database, fill, pg, schema_dump, snapshot,
                     table_rows, user_tables)


def current_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


def kept_releases():
    """The releases whose install scripts the repository keeps (sql/pg_ab--X.Y.Z.sql)."""
    found = []
    for path in glob.glob(os.path.join(ROOT, "sql", "pg_ab--*.sql")):
        m = re.fullmatch(r"pg_ab--(\d+\.\d+\.\d+)\.sql", os.path.basename(path))
        if m:
            found.append(m.group(1))
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture
def databases():
    names = []

    def _new():
        name = "op_" + uuid.uuid4().hex[:10]
        create_database(name)
        names.append(name)
        return name

    yield _new
    for n in names:
        drop_database(n)


def filled(dbname, version=None):
    with psycopg.connect(dbname=dbname, autocommit=True) as c:
        c.execute("CREATE EXTENSION ltree")
        c.execute("CREATE EXTENSION pg_ab" + (f" VERSION '{version}'" if version else ""))
        fill(c)
        return snapshot(c)


def restored_matches(source, target):
    with psycopg.connect(dbname=target, autocommit=True) as c:
        after = snapshot(c)
        assert after["tables"].keys() == source["tables"].keys()
        for table, rows in source["tables"].items():
            assert after["tables"][table] == rows, f"{table} differs after the restore"
        assert after["sequences"] == source["sequences"]
        assert after["answers"] == source["answers"]
        # Sequences continue after the restored maximum: the next event gets a new id.
        top = c.execute("SELECT max(id) FROM ab.events").fetchone()[0]
        c.execute("SELECT ab.pause_test('t_active', 'after restore')")
        assert c.execute("SELECT max(id) FROM ab.events").fetchone()[0] > top
        assert c.execute("SELECT count(*) FROM ab.audit WHERE row_key = 't_active' AND new_value->>'status' = 'paused'").fetchone()[0] == 1


def test_filled_database_survives_custom_format_dump_and_single_transaction_restore(databases, tmp_path):
    source = databases()
    before = filled(source)
    assert len(before["tables"]["ab.metrics_default"]) == 11
    assert sum(len(r) for t, r in before["tables"].items() if t.startswith("ab.metrics")) == 301
    dump = tmp_path / "pg_ab.dump"
    pg("pg_dump", "-Fc", "-f", str(dump), "-d", source)
    target = databases()
    pg("pg_restore", "--exit-on-error", "--single-transaction", "-d", target, str(dump))
    restored_matches(before, target)


def test_filled_database_survives_plain_format_dump_through_psql(databases, tmp_path):
    source = databases()
    before = filled(source)
    dump = tmp_path / "pg_ab.sql"
    pg("pg_dump", "-f", str(dump), "-d", source)
    target = databases()
    r = pg("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", str(dump))
    assert "ERROR" not in r.stderr
    restored_matches(before, target)


def test_restore_replaces_seeded_defaults_and_keeps_deleted_ones_deleted(databases, tmp_path):
    source = databases()
    filled(source)
    dump = tmp_path / "pg_ab.dump"
    pg("pg_dump", "-Fc", "-f", str(dump), "-d", source)
    target = databases()
    pg("pg_restore", "--exit-on-error", "--single-transaction", "-d", target, str(dump))
    with psycopg.connect(dbname=target) as c:
        assert c.execute("SELECT base FROM ab.calibration_weights").fetchone()[0] == 0.5
        assert c.execute("SELECT value FROM ab.risk_thresholds WHERE name = 'alpha'").fetchone()[0] == 0.01
        # Untouched defaults are still there, once.
        assert c.execute("SELECT value FROM ab.risk_thresholds WHERE name = 'power'").fetchone()[0] == 0.8
        assert c.execute("SELECT count(*) FROM ab.guardrails WHERE test_id = '*' AND metric = 'average_confidence'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM ab.guardrails WHERE test_id = '*'").fetchone()[0] == 3
        # Deleting a default and adding the same key again is a user row like any other.
        c.execute("INSERT INTO ab.guardrails (test_id, metric, action) VALUES ('*', 'average_confidence', 'hold')")
        assert c.execute("SELECT count(*) FROM ab.removed_defaults").fetchone()[0] == 0


def test_upgrade_from_every_kept_release_keeps_rows_answers_and_matches_a_fresh_install(databases):
    releases = [v for v in kept_releases() if v != current_version()]
    assert releases, "no kept release script (sql/pg_ab--X.Y.Z.sql) to upgrade from"
    for old in releases:
        db = databases()
        before = filled(db, version=old)
        # The new library serves the old release's SQL until the update: its pipeline function
        # (nine arguments, its own C symbol) still runs.
        with psycopg.connect(dbname=db) as c:
            out = c.execute("SELECT ab.extract_entities_with_ab_testing('Angela Merkel visited Berlin.', 'u1', NULL, NULL, "
                            "'t_active', 'baseline_rule_based')").fetchone()[0]
            assert out["variant_used"] == "baseline_rule_based" and out["entities_extracted"], out
            c.rollback()
        with psycopg.connect(dbname=db, autocommit=True) as c:
            c.execute("ALTER EXTENSION pg_ab UPDATE")
            assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_ab'").fetchone()[0] == current_version()
            after = snapshot(c)
        for table, rows in before["tables"].items():
            # Columns the upgrade added are compared by the schema check below, not here.
            kept = [json.dumps({k: v for k, v in json.loads(r).items() if k in json.loads(rows[0])}, sort_keys=True)
                    for r in after["tables"][table]] if rows else after["tables"][table]
            assert sorted(kept) == sorted(json.dumps(json.loads(r), sort_keys=True) for r in rows), \
                f"{table} changed in the upgrade from {old}"
        # Sequences the upgrade added (ab.schedules_id_seq) start unused; the others keep their place.
        assert {k: v for k, v in after["sequences"].items() if k in before["sequences"]} == before["sequences"]
        assert all(v == 0 for k, v in after["sequences"].items() if k not in before["sequences"]), after["sequences"]
        assert after["answers"] == before["answers"], f"answers changed in the upgrade from {old}"

        # The upgraded schema is the fresh install's: same members, definitions, grants and
        # config-dump registrations. The daily partitions are the user's in both.
        fresh = databases()
        with psycopg.connect(dbname=fresh, autocommit=True) as c:
            c.execute("CREATE EXTENSION ltree")
            c.execute("CREATE EXTENSION pg_ab")
            c.execute("SELECT ab.create_metrics_partitions(7)")  # what 0.1.0's install made
        partitions = "SELECT array_agg(inhrelid::regclass::text ORDER BY 1) FROM pg_inherits WHERE inhparent = 'ab.metrics'::regclass"
        with psycopg.connect(dbname=db) as u, psycopg.connect(dbname=fresh) as f:
            assert u.execute(partitions).fetchone() == f.execute(partitions).fetchone()
        upgraded, installed = schema_dump(db), schema_dump(fresh)
        if upgraded != installed:
            import difflib
            diff = "\n".join(difflib.unified_diff(installed, upgraded, "fresh install", f"upgraded from {old}", lineterm="", n=2))
            raise AssertionError(f"the upgrade from {old} does not give the fresh schema:\n{diff[:6000]}")


def test_the_restored_audit_trail_is_the_dumped_one(databases, tmp_path):
    source = databases()
    filled(source)
    with psycopg.connect(dbname=source) as c:
        audit = table_rows(c, "ab.audit")
        events = table_rows(c, "ab.events")
    assert len(audit) > 10 and len(events) > 10
    dump = tmp_path / "pg_ab.dump"
    pg("pg_dump", "-Fc", "-f", str(dump), "-d", source)
    target = databases()
    # Notifications of restored events would reach a relay already listening on the target.
    with psycopg.connect(dbname=target, autocommit=True) as listener:
        listener.execute("LISTEN pg_ab_events")
        pg("pg_restore", "--exit-on-error", "-d", target, str(dump))
        assert list(listener.notifies(timeout=1.0, stop_after=1)) == []
    with psycopg.connect(dbname=target) as c:
        assert table_rows(c, "ab.audit") == audit
        assert table_rows(c, "ab.events") == events
        assert "ab.metrics_default" in user_tables(c)
