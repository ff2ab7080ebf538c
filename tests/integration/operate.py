"""What the operations tests share: a database filled the way a platform fills it, a snapshot of
every pg_ab table and of the answers its functions give, and the PostgreSQL client programs of
the private cluster (pg_dump, pg_restore, psql, pg_basebackup)."""
import json
import os
import subprocess

import psycopg

PG_BIN = "/usr/lib/postgresql/15/bin"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USERS = [f"user_{i}" for i in range(10_000)]


def pg(program, *args, as_postgres=False, check=True, **kw):
    """Runs a PostgreSQL client program against the private cluster (PGHOST/PGPORT)."""
    cmd = [os.path.join(PG_BIN, program), *args]
    if as_postgres and os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{program} {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r


def create_database(name):
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')


def drop_database(name):
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(conn):
    """Flags, tests in every state, sticky assignments and exposures, metrics in several daily
    partitions and the default partition, events, audit, hierarchy, changed settings. Uses only
    the SQL API of 0.1.0, so it fills every release."""
    x = conn.execute
    x("SELECT ab.create_metrics_partitions(3)")
    x("SELECT ab.create_flag('ff.entity_extraction_v1', 'extraction', 100, true)")
    x("SELECT ab.create_flag('ff.beta', 'a flag', 30, true, ARRAY['ff.entity_extraction_v1'])")
    x("SELECT ab.create_flag('ff.off', 'off', 50, false)")

    def make(test_id, extra=""):
        x("SELECT ab.create_test(%s::jsonb)",
          ('{"test_name": "%s", "test_id": "%s", "champion_variant": "baseline_rule_based",'
           ' "challenger_variant": "llm_v2", "rollout_stages": [25, 100]%s}' % (test_id, test_id, extra),))

    make("t_draft")
    for t in ("t_active", "t_paused", "t_rolled", "t_done"):
        make(t, ', "sticky": true, "log_exposures": true')
        x("SELECT ab.start_test(%s)", (t,))
    x("SELECT ab.progress_rollout('t_active')")
    x("SELECT ab.update_weights('t_active', '{\"baseline_rule_based\": 0.4, \"llm_v2\": 0.6}')")
    x("SELECT ab.set_default_test('t_active')")
    for i in range(200):
        x("SELECT ab.assign_and_log('t_active', %s, %s)", (f"user_{i}", f"s{i}"))
    x("SELECT ab.pause_test('t_paused', 'investigating')")
    x("SELECT ab.rollback_test('t_rolled', 'error rate up')")
    x("SELECT ab.complete_test('t_done', 'llm_v2')")

    # 301 metric rows: today's API calls, then rows dated into other days and out of range.
    for i in range(100):
        variant = "llm_v2" if i % 2 else "baseline_rule_based"
        x("SELECT ab.submit_extraction_metrics('t_active', %s, %s::jsonb)",
          (variant, json.dumps({"latency_ms": 400 + 7 * i, "entities_processed": i % 9,
                                "average_confidence": 0.5 + (i % 40) / 100, "deduplication_rate": (i % 5) / 10,
                                "extraction_success_rate": 1.0 if i % 11 else 0.0})))
    for i in range(100):
        x("SELECT ab.submit_error_metrics('t_active', 'llm_v2', %s::jsonb)",
          (json.dumps({"error_type": "TimeoutError", "error_message": f"upstream {i}",
                       "extraction_time_ms": 5000 + i, "content_length": 70 + i}),))
    x("""INSERT INTO ab.metrics (recorded_at, test_id, variant, kind, latency_ms, entities_processed,
                                 average_confidence, deduplication_rate, extraction_success)
         SELECT now() + (g % 3) * interval '1 day', 't_active', 'llm_v2', 'extraction', g, 3, 0.7, 0.1, true
         FROM generate_series(1, 90) g""")
    x("""INSERT INTO ab.metrics (recorded_at, test_id, variant, kind, latency_ms, extraction_success)
         SELECT timestamptz '2001-02-03 04:05:06+00' + g * interval '1 hour', 't_rolled', 'llm_v2', 'extraction', g, true
         FROM generate_series(1, 11) g""")

    x("SELECT ab.add_place(NULL, 'World', 'world')")
    x("SELECT ab.add_place('world', 'Europe', 'continent')")
    x("SELECT ab.add_place('world.europe', 'Germany', 'country', ARRAY['Deutschland'])")
    x("SELECT ab.add_place('world.europe.germany', 'Berlin', 'city')")
    x("SELECT ab.add_place('world', 'North America', 'continent')")

    x("SELECT ab.set_calibration_weights(0.5, 0.2, 0.1, 0.1, 0.1)")
    x("SELECT ab.set_source_reliability('reuters', 0.95, 'wire')")
    x("UPDATE ab.risk_thresholds SET value = 0.01 WHERE name = 'alpha'")
    x("UPDATE ab.alert_thresholds SET value = 2.5 WHERE name = 'latency_p95_ms'")
    x("DELETE FROM ab.guardrails WHERE test_id = '*' AND metric = 'average_confidence'")
    x("INSERT INTO ab.guardrails (test_id, metric, action, tolerance) VALUES ('t_active', 'latency_ms', 'rollback', 0.5)")
    x("INSERT INTO ab.relay_cursors (relay_name, last_event_id) VALUES ('main', 3)")
    if x("SELECT to_regproc('ab.set_flag_rules') IS NOT NULL").fetchone()[0]:
        fill_targeting(conn)


TARGETED_CONTEXTS = ['{"country": "DE", "plan": "enterprise"}', '{"country": "US", "app_version": "4.1.0"}', '{}']


def fill_targeting(conn):
    """Segments, an id list, a flag's rules and overrides (0.2.0's targeting)."""
    x = conn.execute
    x("""SELECT ab.create_segment('eu', '{"attribute": "country", "op": "in", "values": ["DE", "FR"]}', 'the EU')""")
    x("SELECT ab.add_to_id_list('qa', ARRAY['user_1', 'user_2', 'user_3'])")
    x("""SELECT ab.set_flag_rules('ff.beta', '[
           {"id": "qa", "when": {"in_list": "qa"}, "serve": true},
           {"id": "eu_enterprise", "when": {"all": [{"segment": "eu"}, {"attribute": "plan", "op": "eq", "value": "enterprise"}]}, "serve": true},
           {"id": "old_app", "when": {"attribute": "app_version", "op": "semver_lt", "value": "4.2.0"}, "rollout_percentage": 10}]')""")
    x("SELECT ab.set_override('ff.beta', 'user_4', false, NULL, 'support')")
    x("SELECT ab.set_override('ff.beta', 'user_5', true, now() + interval '10 years', 'QA')")
    x("""SELECT ab.create_segment('unused', '{"attribute": "plan", "op": "exists"}')""")
    x("""SELECT ab.set_test_targeting('t_active', '{"rules": [{"id": "qa", "when": {"in_list": "qa"}, "variant": "llm_v2"}]}')""")
    x("SELECT ab.set_override('t_active', 'user_6', 'llm_v2', NULL, 'QA')")
    x("""SELECT ab.set_variant_payload('t_active', 'llm_v2', '{"model": "llm-v2", "temperature": 0.2}')""")
    x("""SELECT ab.set_payload_schema('t_active', '{"type": ["object", "null"], "properties": {"temperature": {"type": "number"}}}')""")
    x("""SELECT ab.schedule(now() + interval '1 day', '{"do": "progress_rollout", "test_id": "t_active"}')""")
    x("""SELECT ab.schedule(now() + interval '2 days', '{"do": "update_rollout_percentage", "flag": "ff.beta", "rollout_percentage": 50}')""")


def user_tables(conn):
    """Every table and partition in schema ab. Not compared: the materialized views (rebuilt,
    not kept) and ab.hierarchy_version, a counter of this database's hierarchy states that names
    its shared images (a restored database counts its own)."""
    return [r[0] for r in conn.execute(
        """SELECT c.oid::regclass::text FROM pg_class c
           WHERE c.relnamespace = 'ab'::regnamespace AND c.relkind IN ('r', 'p')
             AND c.oid <> 'ab.hierarchy_version'::regclass
           ORDER BY 1""").fetchall()]


def table_rows(conn, table):
    rows = conn.execute(f"SELECT to_jsonb(t)::text FROM ONLY {table} t").fetchall()
    return sorted(r[0] for r in rows)


def sequences(conn):
    return dict(conn.execute(
        """SELECT schemaname || '.' || sequencename, coalesce(last_value, 0) FROM pg_sequences
           WHERE schemaname = 'ab' ORDER BY 1""").fetchall())


def stripped(row_sql):
    """An ab.assignment row as JSON text without its null fields."""
    return f"jsonb_strip_nulls(to_jsonb({row_sql}))::text"


def answers(conn):
    """The answers of the read API for fixed inputs."""
    q = lambda sql, *a: conn.execute(sql, a).fetchall()
    out = {
        # 0.2.0 added the payload to ab.assignment: NULL payloads (all of 0.1.0's) left out.
        "assign": q("SELECT u, " + stripped("ab.assign('t_active', u)") + " FROM unnest(%s::text[]) u", USERS),
        "assign_rolled": q("SELECT " + stripped("ab.assign('t_rolled', 'user_1')")),
        "get_assignment": q("SELECT u, " + stripped("ab.get_assignment(u)") + " FROM unnest(%s::text[]) u", USERS[:500]),
        "is_enabled": q("SELECT u, ab.is_enabled('ff.beta', u) FROM unnest(%s::text[]) u", USERS[:2000]),

        "get_test_metrics": q("SELECT ab.get_test_metrics('t_active')::text"),
        "resolve": q("SELECT path::text, name, kind, depth FROM ab.resolve_ancestors('world.europe.germany.berlin')"),
        "resolve_name": q("SELECT path::text, matched FROM ab.resolve_name('Deutschland')"),
        "weights": q("SELECT to_jsonb(w)::text FROM ab.calibration_weights w"),
        "guardrails": q("SELECT to_jsonb(g)::text FROM ab.guardrails g ORDER BY test_id, metric"),
    }
    if conn.execute("SELECT to_regclass('ab.flag_rules') IS NOT NULL").fetchone()[0] and \
            conn.execute("SELECT EXISTS (SELECT 1 FROM ab.flag_rules)").fetchone()[0]:
        # Targeting's answers, where there is targeting (a database filled by 0.1.0 has none).
        out["is_enabled_in_context"] = q(
            "SELECT u, c, ab.is_enabled('ff.beta', u, c::jsonb) FROM unnest(%s::text[]) u, unnest(%s::text[]) c",
            USERS[:300], TARGETED_CONTEXTS)
    evaluation = conn.execute("SELECT ab.evaluate('t_active')").fetchone()[0]
    out["evaluate"] = json.dumps(evaluation, sort_keys=True)
    return out


def snapshot(conn):
    return {
        "tables": {t: table_rows(conn, t) for t in user_tables(conn)},
        "sequences": sequences(conn),
        "answers": answers(conn),
    }


def schema_dump(dbname):
    """The extension's schema as pg_upgrade sees it: pg_dump --binary-upgrade writes every
    member of the extension (functions, tables, triggers, indexes, grants, config-dump
    registrations), without the OIDs that differ between two databases."""
    out = pg("pg_dump", "--schema-only", "--binary-upgrade", "--no-owner", "-d", dbname).stdout
    keep, skipping = [], False
    for line in out.splitlines():
        # OIDs, relfilenodes and frozen xids differ between any two databases; the config
        # tables are carried by OID in binary_upgrade_create_empty_extension (compared below).
        if line.startswith(("SELECT pg_catalog.binary_upgrade_", "UPDATE pg_catalog.pg_class")):
            skipping = True
        # Also left out: sequence positions (data) and psql's per-dump \\restrict keys.
        if line.startswith(("SELECT pg_catalog.setval(", "\\restrict", "\\unrestrict")):
            continue
        if not skipping and line.strip() and not line.startswith("--"):
            keep.append(line)
        if skipping and line.rstrip().endswith(";"):
            skipping = False
    with psycopg.connect(dbname=dbname) as c:
        config = c.execute(
            """SELECT coalesce(jsonb_agg(jsonb_build_array(cfg::regclass::text, cond) ORDER BY cfg::regclass::text), '[]')::text
               FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond)
               WHERE e.extname = 'pg_ab'""").fetchone()[0]
    keep.append("extconfig " + config)
    return keep


# Every callable function of pg_ab's SQL API, with arguments that succeed on a database made by
# fill(), and the least role that may call it. "relay" marks what ab_relay may call as well.
# The roles and standby tests check this list against the catalog, so a new function cannot be
# forgotten here.
READER, WRITER, ADMIN = "ab_reader", "ab_writer", "ab_admin"
CALLS = [
    # (function, least role, writes, also for the relay, SQL)
    ("assign", READER, False, False, "SELECT ab.assign('t_active', 'u1')"),
    ("assign_variant", READER, False, False, "SELECT ab.assign_variant('t_active', 'u1')"),
    ("get_assignment", READER, False, False, "SELECT ab.get_assignment('u1')"),
    ("get_champion_assignment", READER, False, False, "SELECT ab.get_champion_assignment()"),
    ("is_enabled", READER, False, False, "SELECT ab.is_enabled('ff.beta', 'u1')"),
    ("explain_flag", READER, False, False, "SELECT ab.explain_flag('ff.beta', 'u1')"),
    ("explain_flag", READER, False, False, """SELECT ab.explain_flag('ff.beta', 'u1', '{"country": "DE"}')"""),
    ("is_enabled", READER, False, False, """SELECT ab.is_enabled('ff.beta', 'u1', '{"plan": "enterprise"}')"""),
    ("get_flag_rules", READER, False, False, "SELECT ab.get_flag_rules('ff.beta')"),
    ("get_test_targeting", READER, False, False, "SELECT ab.get_test_targeting('t_active')"),
    ("assign", READER, False, False, """SELECT ab.assign('t_active', 'u1', NULL, '{"plan": "pro"}')"""),
    ("assign_variant", READER, False, False, """SELECT ab.assign_variant('t_active', 'u1', NULL, '{"plan": "pro"}')"""),
    ("get_assignment", READER, False, False, """SELECT ab.get_assignment('u1', NULL, '{"plan": "pro"}')"""),
    ("get_payload", READER, False, False, """SELECT ab.get_payload('t_active', 'u1', '{"plan": "pro"}')"""),
    ("explain_assignment", READER, False, False, """SELECT ab.explain_assignment('t_active', 'u1', '{"plan": "pro"}')"""),
    ("get_rollout_percentage", READER, False, False, "SELECT ab.get_rollout_percentage('ff.beta')"),
    ("rollout_bucket", READER, False, False, "SELECT ab.rollout_bucket('ff.beta', 'u1')"),
    ("variant_point", READER, False, False, "SELECT ab.variant_point('t_active', 'u1')"),
    ("growthbook_hash", READER, False, False, "SELECT ab.growthbook_hash('seed', 'u1')"),
    ("unleash_normalized_hash", READER, False, False, "SELECT ab.unleash_normalized_hash('g', 'u1')"),
    ("posthog_hash", READER, False, False, "SELECT ab.posthog_hash('ff', 'u1')"),
    ("get_test", READER, False, True, "SELECT ab.get_test('t_active')"),
    ("get_active_tests", READER, False, False, "SELECT * FROM ab.get_active_tests()"),
    ("evaluate_for_unit", READER, False, True, """SELECT ab.evaluate_for_unit('u1', '{"plan": "pro"}')"""),
    ("dashboard", READER, False, True, "SELECT ab.dashboard()"),
    ("dashboard", READER, False, True, "SELECT ab.dashboard(ARRAY['t_active'], 5)"),
    ("classify_5w", READER, False, False, "SELECT ab.classify_5w('person')"),
    ("apply_5w_framework", READER, False, False,
     """SELECT ab.apply_5w_framework('[{"text": "Berlin", "type": "city", "confidence": 0.9}]')"""),
    ("calibrate_confidence", READER, False, False, "SELECT ab.calibrate_confidence(0.9, 0.8, 0.7, 0.6, 0.5)"),
    ("apply_confidence_calibration", READER, False, False,
     """SELECT ab.apply_confidence_calibration('[{"text": "Berlin", "type": "city", "confidence": 0.9}]', 'Berlin', 'reuters')"""),
    ("apply_deduplication", READER, False, False,
     """SELECT ab.apply_deduplication('[{"text": "Berlin", "type": "city", "confidence": 0.9}]')"""),
    ("entity_similarity", READER, False, False, "SELECT ab.entity_similarity('Berlin', 'berlin')"),
    ("extract_entities_rule_based", READER, False, False,
     "SELECT ab.extract_entities_rule_based('Angela Merkel visited Berlin on Monday.')"),
    ("place_keys", READER, False, False, "SELECT ab.place_keys('Berlin')"),
    ("place_label", READER, False, False, "SELECT ab.place_label('Berlin')"),
    ("apply_hierarchy", READER, False, False,
     """SELECT ab.apply_hierarchy('[{"text": "Berlin", "type": "city", "confidence": 0.9}]')"""),
    ("evaluate", READER, False, False, "SELECT ab.evaluate('t_active'), ab.evaluate('t_active', now() - interval '1 day', now())"),
    ("get_test_metrics", READER, False, False, "SELECT ab.get_test_metrics('t_active')"),
    ("health", READER, False, False, "SELECT ab.health()"),
    ("check_alerts", READER, False, False, "SELECT ab.check_alerts()"),
    ("relay_lag", READER, False, True, "SELECT * FROM ab.relay_lag()"),
    # From the newest id: nothing to read, so no hole and no xid (the standby answers it too).
    ("events_since", READER, False, True, "SELECT * FROM ab.events_since((SELECT coalesce(max(id), 0) FROM ab.events)::text)"),
    ("sketch_sum", READER, False, False, "SELECT ab.sketch_sum(latency_sketch) FROM ab.metric_stats"),
    ("_sketch_add", READER, False, False, "SELECT ab._sketch_add('{1,2}', '{3}')"),
    ("role_functions", READER, False, False, "SELECT ab.role_functions('ab_reader')"),
    ("require_primary", READER, False, False, "SELECT ab.require_primary('ab.nothing')"),
    ("restoring", READER, False, False, "SELECT ab.restoring()"),
    ("cache_stats", READER, False, False, "SELECT * FROM ab.cache_stats()"),
    ("hierarchy_cache_stats", READER, False, False, "SELECT * FROM ab.hierarchy_cache_stats()"),
    ("reset_cache_stats", READER, False, False, "SELECT ab.reset_cache_stats()"),
    ("preload_hierarchy", READER, False, False, "SELECT * FROM ab.preload_hierarchy()"),
    ("resolve_ancestors", READER, False, False, "SELECT * FROM ab.resolve_ancestors('world.europe.germany')"),
    ("resolve_ancestors_many", READER, False, False,
     "SELECT * FROM ab.resolve_ancestors_many(ARRAY['world.europe', 'world.north_america']::ltree[])"),
    ("resolve_name", READER, False, False, "SELECT * FROM ab.resolve_name('Deutschland')"),
    ("_resolve_name", READER, False, False, "SELECT * FROM ab._resolve_name('Deutschland')"),
    ("row_key", READER, False, False, """SELECT ab.row_key('{"a": 1, "b": 2}', '{a}')"""),
    ("assign_and_log", WRITER, True, False, "SELECT ab.assign_and_log('t_active', 'u1')"),
    ("assign_and_log", WRITER, True, False, """SELECT ab.assign_and_log('t_active', 'u1', NULL, '{"plan": "pro"}')"""),
    ("submit_extraction_metrics", WRITER, True, False,
     """SELECT ab.submit_extraction_metrics('t_active', 'llm_v2', '{"latency_ms": 12.5}')"""),
    ("submit_error_metrics", WRITER, True, False,
     """SELECT ab.submit_error_metrics('t_active', 'llm_v2', '{"error_type": "TimeoutError"}')"""),
    ("submit_extraction_metrics_batch", WRITER, True, False,
     """SELECT ab.submit_extraction_metrics_batch('t_active', '[{"variant": "llm_v2", "latency_ms": 3}, {"variant": "llm_v2", "latency_ms": 4}]')"""),
    ("extract_entities_with_ab_testing", WRITER, True, False,
     "SELECT ab.extract_entities_with_ab_testing('Angela Merkel visited Berlin on Monday.', 'u1', NULL, NULL, 't_active', 'baseline_rule_based')"),
    ("_latency_sketch", WRITER, False, False, "SELECT ab._latency_sketch(ARRAY[1.5, 20])"),
    ("create_flag", ADMIN, True, False, "SELECT ab.create_flag('ff.new', 'new', 10)"),
    ("set_flag_dependencies", ADMIN, True, False, "SELECT ab.set_flag_dependencies('ff.beta', '{}')"),
    ("update_rollout_percentage", ADMIN, True, False, "SELECT ab.update_rollout_percentage('ff.beta', 40)"),
    ("enable_flag", ADMIN, True, False, "SELECT ab.enable_flag('ff.off')"),
    ("disable_flag", ADMIN, True, False, "SELECT ab.disable_flag('ff.beta')"),
    ("disable_flags", ADMIN, True, False, "SELECT ab.disable_flags(ARRAY['ff.beta'])"),
    ("set_flag_rules", ADMIN, True, False,
     """SELECT ab.set_flag_rules('ff.off', '[{"id": "r", "when": {"segment": "eu"}, "serve": true}]')"""),
    ("create_segment", ADMIN, True, False, """SELECT ab.create_segment('us', '{"attribute": "country", "op": "eq", "value": "US"}')"""),
    ("delete_segment", ADMIN, True, False, """SELECT ab.delete_segment('unused')"""),
    ("add_to_id_list", ADMIN, True, False, "SELECT ab.add_to_id_list('qa', ARRAY['user_9'])"),
    ("remove_from_id_list", ADMIN, True, False, "SELECT ab.remove_from_id_list('qa', ARRAY['user_1'])"),
    ("set_override", ADMIN, True, False, "SELECT ab.set_override('ff.beta', 'user_9', true)"),
    ("set_test_targeting", ADMIN, True, False,
     """SELECT ab.set_test_targeting('t_active', '{"audience": {"segment": "eu"}}')"""),
    ("clear_override", ADMIN, True, False, "SELECT ab.clear_override('ff.beta', 'user_4')"),
    ("set_override", ADMIN, True, False, "SELECT ab.set_override('t_active', 'user_9', 'llm_v2')"),
    ("clear_override", ADMIN, True, False, "SELECT ab.clear_override('t_active', 'user_6')"),
    ("set_variant_payload", ADMIN, True, False, """SELECT ab.set_variant_payload('t_active', 'baseline_rule_based', '{"model": "rules"}')"""),
    ("set_payload_schema", ADMIN, True, False, "SELECT ab.set_payload_schema('t_active', NULL)"),
    ("set_test_hashing", ADMIN, True, False, "SELECT ab.set_test_hashing('t_draft', 'growthbook_v2')"),
    ("set_flag_hashing", ADMIN, True, False, "SELECT ab.set_flag_hashing('ff.beta', 'unleash', 'beta')"),
    ("schedule", ADMIN, True, False, """SELECT ab.schedule(now() + interval '1 hour', '{"do": "pause_test", "test_id": "t_active"}')"""),
    ("cancel_schedule", ADMIN, True, False, "SELECT ab.cancel_schedule((SELECT min(id) FROM ab.schedules))"),
    ("_schedule_statement", ADMIN, False, False, """SELECT ab._schedule_statement('{"do": "start_test", "test_id": "t_draft"}')"""),
    ("_schedule_event", ADMIN, True, False, "SELECT ab._schedule_event((SELECT min(id) FROM ab.schedules), 'checked')"),
    ("apply_due_schedules", ADMIN, True, True, "SELECT ab.apply_due_schedules()"),
    ("delete_flag", ADMIN, True, False, "SELECT ab.delete_flag('ff.off')"),
    ("create_test", ADMIN, True, False,
     """SELECT ab.create_test('{"test_name": "n", "test_id": "t_new", "champion_variant": "a", "challenger_variant": "b"}')"""),
    ("start_test", ADMIN, True, False, "SELECT ab.start_test('t_draft')"),
    ("progress_rollout", ADMIN, True, False, "SELECT ab.progress_rollout('t_active')"),
    ("pause_test", ADMIN, True, False, "SELECT ab.pause_test('t_active', 'why')"),
    ("resume_test", ADMIN, True, False, "SELECT ab.resume_test('t_paused')"),
    ("rollback_test", ADMIN, True, False, "SELECT ab.rollback_test('t_active', 'why')"),
    ("complete_test", ADMIN, True, False, "SELECT ab.complete_test('t_active', 'llm_v2')"),
    ("delete_test", ADMIN, True, False, "SELECT ab.delete_test('t_draft')"),
    ("update_weights", ADMIN, True, False,
     """SELECT ab.update_weights('t_active', '{"baseline_rule_based": 0.5, "llm_v2": 0.5}')"""),
    ("bump_bucket_version", ADMIN, True, False, "SELECT ab.bump_bucket_version('t_active')"),
    ("set_default_test", ADMIN, True, False, "SELECT ab.set_default_test('t_paused')"),
    ("integration_rollback", ADMIN, True, False, "SELECT ab.integration_rollback('why')"),
    ("evaluate_risk", ADMIN, True, False, "SELECT ab.evaluate_risk('t_active')"),
    ("evaluate_all_risks", ADMIN, True, True, "SELECT ab.evaluate_all_risks()"),
    ("progress_rollout_gated", ADMIN, True, False, "SELECT ab.progress_rollout_gated('t_active', 0, 0)"),
    ("advance_ready_tests", ADMIN, True, False, "SELECT ab.advance_ready_tests(0, 0)"),
    ("set_calibration_weights", ADMIN, True, False, "SELECT ab.set_calibration_weights(0.4, 0.2, 0.15, 0.15, 0.1)"),
    ("set_source_reliability", ADMIN, True, False, "SELECT ab.set_source_reliability('ap', 0.8)"),
    ("add_place", ADMIN, True, False, "SELECT ab.add_place('world', 'Asia', 'continent')"),
    ("create_metrics_partitions", ADMIN, True, True, "SELECT ab.create_metrics_partitions(5)"),
    ("drop_metrics_partitions", ADMIN, True, False, "SELECT ab.drop_metrics_partitions(now() - interval '1000 days')"),
    ("prune_events", ADMIN, True, True, "SELECT ab.prune_events('7 days')"),
    ("refresh_variant_metrics", ADMIN, True, False, "SELECT ab.refresh_variant_metrics()"),
    ("refresh_hierarchy_ancestry", ADMIN, True, False, "SELECT ab.refresh_hierarchy_ancestry()"),
    ("invalidate_config_cache", ADMIN, False, False, "SELECT ab.invalidate_config_cache('ab.config_signal'::regclass)"),
]
# Called only by the extension's owner (CREATEROLE): not part of any role.
OWNER_ONLY = {"create_roles": "SELECT ab.create_roles()"}


def api_functions(conn):
    """Names of every function in schema ab that a caller can call (not trigger functions)."""
    return {r[0] for r in conn.execute(
        """SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'ab'::regnamespace
           AND prorettype <> 'trigger'::regtype""").fetchall()}
