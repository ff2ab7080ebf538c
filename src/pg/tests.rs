//! `#[pg_test]` tests: each runs inside PostgreSQL with the extension installed, in a
//! transaction of its own. Error paths check the SQLSTATE and that the call changed nothing.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A fingerprint of every table the extension writes.
    fn state() -> String {
        one::<String>(
            "SELECT md5(concat_ws('|',
                (SELECT string_agg(to_jsonb(f)::text, ',' ORDER BY name) FROM ab.flags f),
                (SELECT string_agg(to_jsonb(t)::text, ',' ORDER BY test_id) FROM ab.tests t),
                (SELECT string_agg(to_jsonb(v)::text, ',' ORDER BY test_id, variant) FROM ab.variants v),
                (SELECT string_agg(to_jsonb(a)::text, ',' ORDER BY test_id, unit_id) FROM ab.assignments a),
                (SELECT count(*) FROM ab.exposures), (SELECT count(*) FROM ab.events),
                (SELECT count(*) FROM ab.audit), (SELECT count(*) FROM ab.metrics),
                (SELECT string_agg(to_jsonb(s)::text, ',' ORDER BY source_id) FROM ab.sources s),
                (SELECT to_jsonb(w)::text FROM ab.calibration_weights w)))",
        )
    }

    /// Runs `call` (an SQL expression) and requires it to fail with `sqlstate`, leaving every
    /// table as it was. The DO block's exception handler is a subtransaction, like a client's
    /// failed statement.
    fn expect_error(call: &str, sqlstate: &str) {
        let before = state();
        run(&format!(
            "DO $do$ BEGIN
                PERFORM {call};
                RAISE EXCEPTION 'expected SQLSTATE {sqlstate}, but the call succeeded' USING ERRCODE = 'XX000';
             EXCEPTION WHEN SQLSTATE '{sqlstate}' THEN NULL;
             END $do$"
        ));
        assert_eq!(before, state(), "{call} changed something");
    }

    fn seed_routing() {
        run("SELECT ab.create_flag('ff.entity_extraction_v1', 'extraction', 100)");
        run("SELECT ab.create_flag('ff.ab_routing', 'routing', 100, true, ARRAY['ff.entity_extraction_v1'])");
    }

    fn started_test(id: &str, extra: &str) {
        run(&format!(
            r#"SELECT ab.create_test('{{"test_name": "{id}", "test_id": "{id}", "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2"{extra}}}')"#
        ));
        run(&format!("SELECT ab.start_test('{id}')"));
    }

    // ---- flags -------------------------------------------------------------------------

    #[pg_test]
    fn create_flag_defaults_and_audit() {
        let f = one::<pgrx::JsonB>("SELECT ab.create_flag('ff.x')").0;
        assert_eq!(f["rollout_percentage"], 0);
        assert_eq!(f["enabled"], true);
        assert_eq!(one::<i32>("SELECT ab.get_rollout_percentage('ff.x')"), 0);
        run("SELECT ab.update_rollout_percentage('ff.x', 40)");
        assert_eq!(one::<i32>("SELECT ab.get_rollout_percentage('ff.x')"), 40);
        let audit = one::<pgrx::JsonB>(
            "SELECT jsonb_build_object('old', old_value->'rollout_percentage', 'new', new_value->'rollout_percentage',
                                       'who', changed_by = current_user)
             FROM ab.audit WHERE table_name = 'flags' AND row_key = 'ff.x' AND action = 'UPDATE' ORDER BY id DESC LIMIT 1",
        )
        .0;
        assert_eq!(audit, serde_json::json!({"old": 0, "new": 40, "who": true}));
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.events WHERE payload->'data'->>'flag' = 'ff.x'"), 2);
    }

    #[pg_test]
    fn flag_errors() {
        run("SELECT ab.create_flag('ff.a', 'a', 50)");
        expect_error("ab.create_flag('ff.a')", "42710");
        expect_error("ab.create_flag('ff.b', '', 150)", "22003");
        expect_error("ab.create_flag('ff.b', '', -1)", "22003");
        expect_error("ab.create_flag(NULL)", "22004");
        expect_error("ab.create_flag('')", "22023");
        expect_error("ab.create_flag('bad name')", "22023");
        expect_error(&format!("ab.create_flag('{}')", "x".repeat(10_000)), "22023");
        expect_error("ab.create_flag('ff.b', '', 10, true, ARRAY['ff.nope'])", "42704");
        expect_error("ab.create_flag('ff.b', '', 10, true, ARRAY['ff.b'])", "42P17");
        expect_error("ab.create_flag('ff.b', '', 10, true, ARRAY[NULL])", "22004");
        expect_error("ab.update_rollout_percentage('ff.nope', 10)", "42704");
        expect_error("ab.update_rollout_percentage('ff.a', 101)", "22003");
        expect_error("ab.update_rollout_percentage('ff.a', NULL)", "22004");
        expect_error("ab.enable_flag('ff.nope')", "42704");
        expect_error("ab.is_enabled('ff.nope', 'u')", "42704");
        expect_error("ab.is_enabled('ff.a', NULL)", "22004");
        expect_error("ab.get_rollout_percentage('ff.nope')", "42704");
        // One unknown name fails the whole call: ff.a stays enabled.
        expect_error("ab.disable_flags(ARRAY['ff.a', 'ff.nope'])", "42704");
        assert!(one::<bool>("SELECT enabled FROM ab.flags WHERE name = 'ff.a'"));
    }

    #[pg_test]
    fn dependency_cycles_are_rejected() {
        run("SELECT ab.create_flag('ff.a')");
        run("SELECT ab.create_flag('ff.b', '', 0, true, ARRAY['ff.a'])");
        run("SELECT ab.create_flag('ff.c', '', 0, true, ARRAY['ff.b'])");
        expect_error("ab.set_flag_dependencies('ff.a', ARRAY['ff.c'])", "42P17");
        expect_error("ab.delete_flag('ff.a')", "55000");
        run("SELECT ab.set_flag_dependencies('ff.b', '{}')");
        assert!(one::<bool>("SELECT ab.delete_flag('ff.a')"));
    }

    #[pg_test]
    fn rollout_increases_keep_everyone_in() {
        run("SELECT ab.create_flag('ff.r', '', 10)");
        run("CREATE TEMP TABLE seen AS SELECT i FROM generate_series(1, 20000) i WHERE ab.is_enabled('ff.r', i::text)");
        let at10 = one::<i64>("SELECT count(*) FROM seen");
        assert!((at10 as f64 / 20000.0 - 0.10).abs() < 0.01, "{at10}");
        for pct in [25, 50, 100] {
            run(&format!("SELECT ab.update_rollout_percentage('ff.r', {pct})"));
            let lost = one::<i64>("SELECT count(*) FROM seen WHERE NOT ab.is_enabled('ff.r', i::text)");
            assert_eq!(lost, 0, "users left the rollout at {pct}%");
            let now = one::<i64>("SELECT count(*) FROM generate_series(1, 20000) i WHERE ab.is_enabled('ff.r', i::text)");
            assert!((now as f64 / 20000.0 - pct as f64 / 100.0).abs() < 0.015, "{pct}%: {now}");
            run("TRUNCATE seen; INSERT INTO seen SELECT i FROM generate_series(1, 20000) i WHERE ab.is_enabled('ff.r', i::text)");
        }
    }

    #[pg_test]
    fn dependencies_gate_is_enabled() {
        seed_routing();
        assert!(one::<bool>("SELECT ab.is_enabled('ff.ab_routing', 'u1')"));
        run("SELECT ab.disable_flag('ff.entity_extraction_v1')");
        assert_eq!(one::<i64>("SELECT count(*) FROM generate_series(1, 1000) i WHERE ab.is_enabled('ff.ab_routing', i::text)"), 0);
        assert_eq!(one::<String>("SELECT ab.explain_flag('ff.ab_routing', 'u1')"), "dependency_off");
        run("SELECT ab.enable_flag('ff.entity_extraction_v1')");
        run("SELECT ab.update_rollout_percentage('ff.entity_extraction_v1', 30)");
        let on = one::<i64>("SELECT count(*) FROM generate_series(1, 10000) i WHERE ab.is_enabled('ff.ab_routing', i::text)");
        assert!((on as f64 / 10000.0 - 0.30).abs() < 0.015, "{on}");
        assert_eq!(one::<i32>("SELECT ab.disable_flags(ARRAY['ff.ab_routing', 'ff.entity_extraction_v1'])"), 2);
        assert_eq!(one::<i32>("SELECT ab.disable_flags(ARRAY['ff.ab_routing'])"), 0);
    }

    // ---- tests and their lifecycle -----------------------------------------------------

    #[pg_test]
    fn create_test_forms() {
        let id = one::<String>(
            r#"SELECT ab.create_test('{"test_name": "integration_test", "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2"}')"#,
        );
        assert!(id.starts_with("integration_test_"), "{id}");
        assert_eq!(one::<String>(&format!("SELECT status FROM ab.tests WHERE test_id = '{id}'")), "draft");
        run(r#"SELECT ab.create_test('{"test_name": "full", "test_id": "full",
               "champion": {"name": "a", "weight": 60, "confidence_threshold": 0.5},
               "challengers": [{"name": "b", "weight": 30}, {"name": "c", "weight": 10, "confidence_threshold": 0.9}],
               "rollout_stages": [5, 20, 100]}')"#);
        assert_eq!(
            one::<pgrx::JsonB>("SELECT jsonb_agg(jsonb_build_array(variant, weight, confidence_threshold) ORDER BY ordinal) FROM ab.variants WHERE test_id = 'full'").0,
            serde_json::json!([["a", 60, 0.5], ["b", 30, 0.7], ["c", 10, 0.9]])
        );
        assert_eq!(one::<Vec<i32>>("SELECT rollout_stages FROM ab.tests WHERE test_id = 'full'"), vec![5, 20, 100]);
    }

    #[pg_test]
    fn create_test_errors() {
        run(r#"SELECT ab.create_test('{"test_name": "x", "test_id": "dup", "champion_variant": "a", "challenger_variant": "b"}')"#);
        expect_error(r#"ab.create_test('{"test_name": "x", "test_id": "dup", "champion_variant": "a", "challenger_variant": "b"}')"#, "42710");
        expect_error("ab.create_test(NULL)", "22004");
        expect_error("ab.create_test('[]')", "22023");
        for bad in [
            r#"{"test_name": "x", "champion_variant": "a", "challenger_variant": "a"}"#,
            r#"{"test_name": "x", "champion_variant": "a"}"#,
            r#"{"test_name": "x", "champion": {"name": "a", "weight": -1}, "challengers": [{"name": "b", "weight": 1}]}"#,
            r#"{"test_name": "x", "champion": {"name": "a", "weight": 0}, "challengers": [{"name": "b", "weight": 0}]}"#,
            r#"{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [50, 25]}"#,
            r#"{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [10, 10]}"#,
            r#"{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "unknown": 1}"#,
            r#"{"test_name": "x", "champion": {"name": "a", "weight": "NaN"}, "challengers": [{"name": "b", "weight": 1}]}"#,
        ] {
            expect_error(&format!("ab.create_test('{bad}')"), "22023");
        }
        expect_error(r#"ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [0, 100]}')"#, "22003");
        expect_error(r#"ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [10, 101]}')"#, "22003");
        expect_error(r#"ab.create_test('{"champion_variant": "a", "challenger_variant": "b"}')"#, "22004");
    }

    #[pg_test]
    fn lifecycle_and_stages() {
        started_test("t1", "");
        assert_eq!(one::<i32>("SELECT ab.get_rollout_percentage('ff.ab_test_t1')"), 10);
        assert_eq!(one::<String>("SELECT status FROM ab.tests WHERE test_id = 't1'"), "active");
        let p = one::<pgrx::JsonB>("SELECT ab.progress_rollout('t1')").0;
        assert_eq!(p, serde_json::json!({"status": "progressed", "from_stage": 10, "to_stage": 25, "test_id": "t1"}));
        run("SELECT ab.progress_rollout('t1'), ab.progress_rollout('t1')");
        assert_eq!(one::<i32>("SELECT current_stage FROM ab.tests WHERE test_id = 't1'"), 100);
        let done = one::<pgrx::JsonB>("SELECT ab.progress_rollout('t1')").0;
        assert_eq!(done["status"], "completed");
        // An unknown current stage restarts at the first.
        run("UPDATE ab.tests SET current_stage = 33 WHERE test_id = 't1'");
        assert_eq!(one::<pgrx::JsonB>("SELECT ab.progress_rollout('t1')").0["to_stage"], 10);

        expect_error("ab.start_test('t1')", "55000");
        expect_error("ab.resume_test('t1')", "55000");
        run("SELECT ab.pause_test('t1', 'investigating')");
        expect_error("ab.progress_rollout('t1')", "55000");
        assert_eq!(one::<String>("SELECT reason FROM ab.assign('t1', 'u1')"), "test_paused");
        run("SELECT ab.resume_test('t1')");
        expect_error("ab.rollback_test('t1', NULL)", "22004");
        expect_error("ab.rollback_test('t1', '  ')", "22023");
        expect_error("ab.rollback_test('nope', 'x')", "42704");
        let r = one::<pgrx::JsonB>("SELECT ab.rollback_test('t1', 'p95 latency')").0;
        assert_eq!(r, serde_json::json!({"status": "rolled_back", "test_id": "t1", "reason": "p95 latency"}));
        assert!(!one::<bool>("SELECT enabled FROM ab.flags WHERE name = 'ff.ab_test_t1'"));
        assert_eq!(one::<String>("SELECT status_reason FROM ab.tests WHERE test_id = 't1'"), "p95 latency");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 1000) i, ab.assign('t1', i::text) a WHERE a.variant <> 'baseline_rule_based'"),
            0
        );
        expect_error("ab.resume_test('t1')", "55000");
        expect_error("ab.complete_test('t1')", "55000");
    }

    #[pg_test]
    fn complete_and_delete() {
        started_test("t2", "");
        expect_error("ab.complete_test('t2', 'nope')", "22023");
        run("SELECT ab.complete_test('t2', 'llm_v2')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 500) i, ab.assign('t2', i::text) a WHERE a.variant = 'llm_v2' AND a.reason = 'completed'"),
            500
        );
        let events_before = one::<i64>("SELECT count(*) FROM ab.events WHERE test_id = 't2'");
        run("SELECT ab.delete_test('t2')");
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.flags WHERE name = 'ff.ab_test_t2'"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.variants WHERE test_id = 't2'"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.events WHERE test_id = 't2'"), events_before + 1);
        expect_error("ab.assign('t2', 'u')", "42704");
        expect_error("ab.delete_test('t2')", "42704");
    }

    #[pg_test]
    fn events_follow_the_seed_shape() {
        started_test("t3", "");
        run("SELECT ab.progress_rollout('t3')");
        run("SELECT ab.rollback_test('t3', 'errors')");
        let types = one::<Vec<String>>("SELECT array_agg(type ORDER BY id) FROM ab.events WHERE test_id = 't3' AND payload->>'type' = 'ab_test_update'");
        assert_eq!(types, vec!["created", "started", "progressed", "rolled_back"]);
        let p = one::<pgrx::JsonB>("SELECT payload FROM ab.events WHERE test_id = 't3' AND type = 'rolled_back'").0;
        let mut keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["data", "test_id", "timestamp", "type", "update_type"]);
        assert_eq!(p["data"]["reason"], "errors");
        assert!(one::<bool>("SELECT abs((payload->>'timestamp')::float8 - extract(epoch FROM now())) < 1 FROM ab.events WHERE test_id = 't3' AND type = 'rolled_back'"));
    }

    #[pg_test]
    fn integration_rollback_pauses_everything() {
        seed_routing();
        run("SELECT ab.create_flag('ff.ab_auto_rollback', '', 100)");
        started_test("ta", "");
        started_test("tb", "");
        let r = one::<pgrx::JsonB>("SELECT ab.integration_rollback('incident 42')").0;
        assert_eq!(r["paused_tests"], serde_json::json!(["ta", "tb"]));
        assert_eq!(r["disabled_flags"], serde_json::json!(["ff.ab_routing", "ff.ab_auto_rollback"]));
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.get_active_tests()"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.tests WHERE status = 'paused' AND status_reason = 'incident 42'"), 2);
    }

    // ---- assignment --------------------------------------------------------------------

    #[pg_test]
    fn weights_split_100k_users_within_one_percent() {
        run(r#"SELECT ab.create_test('{"test_name": "w", "test_id": "w", "champion": {"name": "a", "weight": 50},
               "challengers": [{"name": "b", "weight": 30}, {"name": "c", "weight": 20}], "rollout_stages": [100]}')"#);
        run("SELECT ab.start_test('w')");
        let shares = one::<pgrx::JsonB>(
            "SELECT jsonb_object_agg(variant, n / 100000.0) FROM
               (SELECT variant, count(*) n FROM generate_series(1, 100000) i, ab.assign('w', 'user-' || i) GROUP BY 1) s",
        )
        .0;
        for (v, w) in [("a", 0.5), ("b", 0.3), ("c", 0.2)] {
            let share = shares[v].as_f64().unwrap();
            assert!((share - w).abs() <= 0.01, "{v}: {share}");
        }
        // The scalar form agrees with the row form.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 5000) i WHERE ab.assign_variant('w', i::text) <> (ab.assign('w', i::text)).variant"),
            0
        );
        // The variant is the README's rule applied to the variant point (itself checked against
        // Python's xxhash in test_hashing.py): the first variant whose cumulative weight share
        // exceeds the point, with weights 50/30/20.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 5000) i
                        WHERE (ab.assign('w', i::text)).variant <> CASE WHEN ab.variant_point('w', i::text) * 100 < 50 THEN 'a'
                                                                        WHEN ab.variant_point('w', i::text) * 100 < 80 THEN 'b'
                                                                        ELSE 'c' END"),
            0
        );
    }

    #[pg_test]
    fn routing_caps_the_rollout_and_gates_it() {
        seed_routing();
        started_test("r", r#", "rollout_stages": [100]"#);
        run("SELECT ab.update_rollout_percentage('ff.ab_routing', 25)");
        let inside = one::<i64>("SELECT count(*) FROM generate_series(1, 20000) i, ab.assign('r', i::text) a WHERE a.in_rollout");
        assert!((inside as f64 / 20000.0 - 0.25).abs() < 0.015, "{inside}");
        assert_eq!(one::<i32>("SELECT effective_rollout FROM ab.get_active_tests() WHERE test_id = 'r'"), 25);
        run("SELECT ab.disable_flag('ff.entity_extraction_v1')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 1000) i, ab.assign('r', i::text) a WHERE a.reason = 'routing_off' AND a.variant = 'baseline_rule_based'"),
            1000
        );
    }

    #[pg_test]
    fn assign_argument_errors() {
        started_test("e", "");
        expect_error("ab.assign('nope', 'u')", "42704");
        expect_error("ab.assign(NULL, 'u')", "22004");
        expect_error("ab.assign('e', NULL, NULL)", "22004");
        // Anonymous traffic is bucketed by session.
        assert_eq!(
            one::<String>("SELECT variant FROM ab.assign('e', NULL, 's1')"),
            one::<String>("SELECT variant FROM ab.assign('e', 's1')")
        );
        // Huge ids are fine.
        run(&format!("SELECT * FROM ab.assign('e', '{}')", "u".repeat(100_000)));
    }

    #[pg_test]
    fn get_assignment_slices_are_exclusive() {
        started_test("s1", r#", "rollout_stages": [100]"#);
        started_test("s2", r#", "rollout_stages": [100]"#);
        let per_test = one::<pgrx::JsonB>(
            "SELECT jsonb_object_agg(test_id, n) FROM
               (SELECT test_id, count(*) n FROM generate_series(1, 10000) i, ab.get_assignment(i::text, 'sess') GROUP BY 1) s",
        )
        .0;
        for t in ["s1", "s2"] {
            let n = per_test[t].as_i64().unwrap();
            assert!((n as f64 / 10000.0 - 0.5).abs() < 0.02, "{t}: {n}");
        }
        // The slice's assignment is the test's own assignment for that user.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM generate_series(1, 2000) i, ab.get_assignment(i::text) g, ab.assign(g.test_id, i::text) a WHERE a.variant <> g.variant"),
            0
        );
        run("SELECT ab.pause_test('s1'), ab.pause_test('s2')");
        let champ = one::<String>("SELECT reason FROM ab.get_assignment('u1')");
        assert_eq!(champ, "default_champion");
        run("SELECT ab.set_default_test('s2')");
        assert_eq!(one::<String>("SELECT test_id FROM ab.get_champion_assignment()"), "s2");
    }

    #[pg_test]
    fn champion_assignment_without_tests() {
        assert_eq!(one::<String>("SELECT reason FROM ab.get_champion_assignment()"), "no_test");
        assert_eq!(one::<String>("SELECT reason FROM ab.get_assignment('u')"), "no_test");
    }

    #[pg_test]
    fn sticky_assignments_survive_weight_changes_until_the_version_moves() {
        run(r#"SELECT ab.create_test('{"test_name": "st", "test_id": "st", "sticky": true, "log_exposures": true,
               "champion": {"name": "a", "weight": 1}, "challengers": [{"name": "b", "weight": 1}], "rollout_stages": [100]}')"#);
        run("SELECT ab.start_test('st')");
        run("CREATE TEMP TABLE first AS SELECT i, (ab.assign_and_log('st', i::text, 'sess')).variant FROM generate_series(1, 2000) i");
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.assignments WHERE test_id = 'st'"), 2000);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.exposures WHERE test_id = 'st'"), 2000);
        run(r#"SELECT ab.update_weights('st', '{"a": 0, "b": 1}')"#);
        // Stored units keep their variant; new units follow the new weights.
        assert_eq!(one::<i64>("SELECT count(*) FROM first f, ab.assign('st', f.i::text) a WHERE a.variant <> f.variant"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM generate_series(5001, 6000) i, ab.assign('st', i::text) a WHERE a.variant <> 'b'"), 0);
        run("SELECT ab.bump_bucket_version('st')");
        assert_eq!(one::<i64>("SELECT count(*) FROM first f, ab.assign_and_log('st', f.i::text) a WHERE a.variant <> 'b'"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.assignments WHERE test_id = 'st' AND bucket_version = 2"), 2000);
        // ab.assign itself never writes.
        let exposures = one::<i64>("SELECT count(*) FROM ab.exposures");
        run("SELECT * FROM ab.assign('st', 'new-user')");
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.exposures"), exposures);
        expect_error(r#"ab.update_weights('st', '{"a": 0, "b": 0}')"#, "22023");
        expect_error(r#"ab.update_weights('st', '{"zzz": 1}')"#, "22023");
    }

    // ---- the cache ---------------------------------------------------------------------

    #[pg_test]
    fn cache_sees_own_changes_and_forgets_aborted_ones() {
        started_test("c", r#", "rollout_stages": [100]"#);
        assert_eq!(one::<String>("SELECT reason FROM ab.assign('c', 'u1')"), "split");
        // An aborted rollback (a subtransaction here) is never seen.
        run("DO $$ BEGIN PERFORM ab.rollback_test('c', 'oops'); RAISE EXCEPTION 'abort'; EXCEPTION WHEN raise_exception THEN NULL; END $$");
        assert_eq!(one::<String>("SELECT reason FROM ab.assign('c', 'u1')"), "split");
        // A change in this transaction is seen by its next statement.
        run("SELECT ab.rollback_test('c', 'real')");
        assert_eq!(one::<String>("SELECT reason FROM ab.assign('c', 'u1')"), "rolled_back");
        let hits = one::<i64>("SELECT hits FROM ab.cache_stats()");
        run("SELECT * FROM ab.assign('c', 'u2')");
        assert!(one::<i64>("SELECT hits FROM ab.cache_stats()") > hits);
    }

    #[pg_test]
    fn cache_stays_bounded() {
        run("SET pg_ab.cache_size = 8");
        for i in 0..50 {
            run(&format!("SELECT ab.create_flag('ff.many_{i}', '', 50)"));
        }
        run("SELECT count(*) FROM generate_series(0, 49) i WHERE ab.is_enabled('ff.many_' || i, 'u')");
        let (entries, evictions) = (one::<i32>("SELECT entries FROM ab.cache_stats()"), one::<i64>("SELECT evictions FROM ab.cache_stats()"));
        assert!(entries <= 8, "{entries}");
        assert!(evictions >= 40, "{evictions}");
    }

    // ---- entity post-processing --------------------------------------------------------

    fn json(sql: &str) -> serde_json::Value {
        one::<pgrx::JsonB>(sql).0
    }

    const SEED_TEXT: &str = "President Biden announced new climate policies in Washington DC yesterday";

    #[pg_test]
    fn five_w_rules_and_errors() {
        for (t, w) in [("person", "who"), ("organization", "who"), ("event", "what"), ("city", "where"),
                       ("date", "when"), ("motive", "why"), ("gadget", "what")] {
            assert_eq!(one::<String>(&format!("SELECT ab.classify_5w('{t}')")), w);
        }
        expect_error("ab.classify_5w(NULL)", "22004");
        let out = json(r#"SELECT ab.apply_5w_framework('[{"text": "Paris", "entity_type": "city", "confidence": 0.5}]')"#);
        assert_eq!(out[0]["metadata"]["type"], "where");
        expect_error("ab.apply_5w_framework('{}')", "22023");
        expect_error(r#"ab.apply_5w_framework('[{"entity_type": "city", "confidence": 0.5}]')"#, "22023");
        expect_error(r#"ab.apply_5w_framework('[{"text": "x", "confidence": 1.5}]')"#, "22003");
        expect_error("ab.apply_5w_framework(NULL)", "22004");
    }

    #[pg_test]
    fn calibration_formula_and_weights() {
        // 0.4·0.8 + 0.2·0.9 + 0.15·0.7 + 0.15·1 + 0.1·0.5 = 0.805, by hand.
        let c = one::<f64>("SELECT ab.calibrate_confidence(0.8, 0.9, 0.7, 1, 0.5)");
        assert!((c - 0.805).abs() < 1e-12, "{c}");
        expect_error("ab.calibrate_confidence('NaN', 0.9, 0.7, 1, 0.5)", "22003");
        expect_error("ab.calibrate_confidence(0.8, 1.1, 0.7, 1, 0.5)", "22003");
        expect_error("ab.calibrate_confidence(0.8, NULL, 0.7, 1, 0.5)", "22004");
        expect_error("ab.set_calibration_weights(0.5, 0.2, 0.15, 0.15, 0.1)", "22023");
        run("SELECT ab.set_calibration_weights(1, 0, 0, 0, 0)");
        assert!((one::<f64>("SELECT ab.calibrate_confidence(0.3, 0.9, 0.7, 1, 0.5)") - 0.3).abs() < 1e-12);
    }

    #[pg_test]
    fn calibration_rules_use_sources_and_the_hierarchy() {
        run("SELECT ab.set_source_reliability('reuters', 0.95)");
        run("INSERT INTO ab.hierarchy (path, name, kind, aliases) VALUES
               ('world.usa.dc', 'District of Columbia', 'region', ARRAY['Washington DC', 'Washington, D.C.'])");
        expect_error("ab.set_source_reliability('x', 2)", "22003");
        let out = json(&format!(
            r#"SELECT ab.apply_confidence_calibration(ab.apply_5w_framework('[
                {{"text": "President Biden", "entity_type": "person", "confidence": 0.9, "source_id": "reuters"}},
                {{"text": "Washington DC", "entity_type": "city", "confidence": 0.6}},
                {{"text": "Atlantis", "entity_type": "city", "confidence": 0.6}},
                {{"text": "yesterday", "entity_type": "date", "confidence": 0.8}}]'), '{SEED_TEXT}')"#
        ));
        let f = |i: usize, k: &str| out[i]["metadata"]["confidence_factors"][k].as_f64().unwrap();
        assert_eq!(f(0, "source_reliability"), 0.95);
        assert_eq!(f(1, "source_reliability"), 0.5);
        assert_eq!(f(1, "geographic_plausibility"), 1.0);
        assert_eq!(f(2, "geographic_plausibility"), 0.0);
        assert_eq!(f(2, "contextual_consistency"), 0.0);
        assert_eq!(f(3, "temporal_coherence"), 1.0);
        // 0.4·0.9 + 0.2·0.95 + 0.15 + 0.15 + 0.1
        assert!((out[0]["confidence"].as_f64().unwrap() - 0.95).abs() < 1e-12);
        assert_eq!(out[0]["metadata"]["original_confidence"], 0.9);
        expect_error(&format!("ab.apply_confidence_calibration('[]', '{}')", "x".repeat(1_100_000)), "54000");
    }

    #[pg_test]
    fn deduplication() {
        let out = json(
            r#"SELECT ab.apply_deduplication('[
                {"text": "Joe Biden", "entity_type": "person", "confidence": 0.7},
                {"text": "Joe Bidenn", "entity_type": "person", "confidence": 0.9},
                {"text": "Joe Biden", "entity_type": "city", "confidence": 0.6},
                {"text": "Kamala Harris", "entity_type": "person", "confidence": 0.8}]')"#,
        );
        assert_eq!(out["input_count"], 4);
        assert_eq!(out["output_count"], 3);
        assert_eq!(out["deduplication_rate"], 0.25);
        assert_eq!(out["entities"][0]["metadata"]["canonical_key"], "who:joe bidenn");
        assert_eq!(json(r#"SELECT ab.apply_deduplication('[{"text": "a", "entity_type": "x", "confidence": 0.5}, {"text": "b", "entity_type": "x", "confidence": 0.5}]', 1.0)"#)["output_count"], 2);
        expect_error("ab.apply_deduplication('[]', 1.5)", "22003");
        expect_error("ab.apply_deduplication('[]', 'NaN')", "22003");
        expect_error("ab.apply_deduplication('\"x\"')", "22023");
    }

    #[pg_test]
    fn rule_based_extractor() {
        let out = json(&format!("SELECT ab.extract_entities_rule_based('{SEED_TEXT}')"));
        let types: Vec<String> = out.as_array().unwrap().iter()
            .map(|e| one::<String>(&format!("SELECT ab.classify_5w('{}')", e["entity_type"].as_str().unwrap())))
            .collect();
        for w in ["who", "where", "when"] {
            assert!(types.iter().any(|t| t == w), "{w} missing from {out}");
        }
        expect_error("ab.extract_entities_rule_based(NULL)", "22004");
        expect_error(&format!("ab.extract_entities_rule_based(repeat('x', {}))", (1 << 20) + 1), "54000");
    }

    fn extraction_test() {
        run(r#"SELECT ab.create_test('{"test_name": "x", "test_id": "ex", "champion_variant": "baseline_rule_based",
               "challenger_variant": "llm_v2", "rollout_stages": [100], "confidence_threshold": 0.1}')"#);
        run("SELECT ab.start_test('ex')");
    }

    fn user_for(variant: &str) -> String {
        one::<String>(&format!(
            "SELECT 'u' || i FROM generate_series(1, 1000) i WHERE (ab.assign('ex', 'u' || i)).variant = '{variant}' LIMIT 1"
        ))
    }

    #[pg_test]
    fn pipeline_end_to_end() {
        extraction_test();
        let baseline_user = user_for("baseline_rule_based");
        let r = json(&format!(
            "SELECT ab.extract_entities_with_ab_testing('{SEED_TEXT}', '{baseline_user}', 'sess')"
        ));
        assert_eq!(r["variant_used"], "baseline_rule_based");
        // The seed's sentence: who, what, where and when, each once after deduplication.
        let mut texts: Vec<&str> = r["entities_extracted"].as_array().unwrap().iter().filter_map(|e| e["text"].as_str()).collect();
        texts.sort_unstable();
        assert_eq!(texts, ["President Biden", "Washington DC", "announced new climate policies", "yesterday"], "{r}");
        assert_eq!(r["processing_metrics"]["test_id"], "ex");
        assert!(r["processing_metrics"]["extraction_time_ms"].as_f64().unwrap() > 0.0);
        assert!(r["entities_extracted"][0]["metadata"]["confidence_factors"].is_object());
        let row = json(&format!(
            "SELECT to_jsonb(m) FROM ab.metrics m WHERE extraction_id = '{}'",
            r["extraction_id"].as_str().unwrap()
        ));
        assert_eq!(row["variant"], "baseline_rule_based");
        assert_eq!(row["entities_processed"], r["processing_metrics"]["entities_processed"]);

        // An external variant needs its entities and latency; without them nothing is recorded.
        let llm_user = user_for("llm_v2");
        expect_error(&format!("ab.extract_entities_with_ab_testing('{SEED_TEXT}', '{llm_user}')"), "22004");
        let r = json(&format!(
            r#"SELECT ab.extract_entities_with_ab_testing('{SEED_TEXT}', '{llm_user}', NULL, NULL, 'ex', 'llm_v2',
                 '[{{"text": "Biden", "entity_type": "person", "confidence": 0.9}}, {{"text": "Biden", "entity_type": "person", "confidence": 0.8}}]', 420)"#
        ));
        assert_eq!(r["variant_used"], "llm_v2");
        assert_eq!(r["processing_metrics"]["entities_processed"], 1);
        assert_eq!(r["processing_metrics"]["deduplication_rate"], 0.5);
        assert!(r["processing_metrics"]["extraction_time_ms"].as_f64().unwrap() >= 420.0);
        let m = json("SELECT ab.get_test_metrics('ex')");
        let variants: Vec<&str> = m["metrics"].as_array().unwrap().iter().map(|x| x["variant"].as_str().unwrap()).collect();
        assert_eq!(variants, vec!["baseline_rule_based", "llm_v2"]);
        expect_error(&format!("ab.extract_entities_with_ab_testing('{SEED_TEXT}', 'u', NULL, NULL, 'ex', 'nope', '[]', 1)"), "22023");
        expect_error(&format!("ab.extract_entities_with_ab_testing('{SEED_TEXT}', 'u', NULL, NULL, 'ex', 'llm_v2', '[]', -1)"), "22003");
        expect_error("ab.extract_entities_with_ab_testing(NULL, 'u')", "22004");
    }

    #[pg_test]
    fn metric_submission_and_partitions() {
        extraction_test();
        // The install makes no daily partition (a restore on another day would collide with
        // them): a row before the first create_metrics_partitions lands in the default one.
        let early = one::<pgrx::Uuid>(r#"SELECT ab.submit_extraction_metrics('ex', 'llm_v2', '{"latency_ms": 1}')"#);
        assert_eq!(one::<String>(&format!("SELECT tableoid::regclass::text FROM ab.metrics WHERE extraction_id = '{early}'")), "ab.metrics_default");
        run(&format!("DELETE FROM ab.metrics WHERE extraction_id = '{early}'"));
        run("DELETE FROM ab.metric_stats");
        assert_eq!(one::<i32>("SELECT ab.create_metrics_partitions(7)"), 8);
        assert_eq!(one::<i32>("SELECT ab.create_metrics_partitions(7)"), 0);
        let id = one::<pgrx::Uuid>(
            r#"SELECT ab.submit_extraction_metrics('ex', 'llm_v2', '{"latency_ms": 812.5, "entities_processed": 4,
                 "average_confidence": 0.83, "deduplication_rate": 0.2, "extraction_success_rate": 1.0}')"#,
        );
        let row = json(&format!("SELECT to_jsonb(m) || jsonb_build_object('part', tableoid::regclass::text) FROM ab.metrics m WHERE extraction_id = '{id}'"));
        assert_eq!(row["latency_ms"], 812.5);
        assert_eq!(row["extraction_success"], true);
        assert!(row["part"].as_str().unwrap().starts_with("ab.metrics_2"), "{row}");
        run(r#"SELECT ab.submit_error_metrics('ex', 'llm_v2', '{"error_type": "TimeoutError", "error_message": "upstream", "extraction_time_ms": 5000, "content_length": 73}')"#);
        expect_error(r#"ab.submit_extraction_metrics('nope', 'llm_v2', '{"latency_ms": 1}')"#, "42704");
        expect_error(r#"ab.submit_extraction_metrics('ex', 'nope', '{"latency_ms": 1}')"#, "22023");
        expect_error(r#"ab.submit_extraction_metrics('ex', 'llm_v2', '{"latency_ms": -1}')"#, "22003");
        expect_error(r#"ab.submit_extraction_metrics('ex', 'llm_v2', '{"entities_processed": 1}')"#, "22004");
        expect_error(r#"ab.submit_extraction_metrics('ex', 'llm_v2', '{"latency_ms": 1, "colour": 1}')"#, "22023");
        expect_error(r#"ab.submit_extraction_metrics('ex', 'llm_v2', '{"latency_ms": 1, "average_confidence": 2}')"#, "22003");
        expect_error(r#"ab.submit_error_metrics('ex', 'llm_v2', '{"error_message": "x"}')"#, "22004");
        let m = json("SELECT ab.get_test_metrics('ex')");
        assert_eq!(m["metrics"][0]["requests"], 1);
        assert_eq!(m["metrics"][0]["errors"], 1);
        assert_eq!(m["metrics"][0]["error_rate"], 0.5);
        run("SELECT ab.refresh_variant_metrics()");
        assert_eq!(one::<i64>("SELECT requests FROM ab.variant_metrics WHERE test_id = 'ex' AND variant = 'llm_v2'"), 1);
        assert_eq!(one::<i32>("SELECT ab.drop_metrics_partitions(now() + interval '30 days')"), 8);
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.metrics"), 0);
        expect_error("ab.get_test_metrics('nope')", "42704");
    }

    // ---- hierarchy ---------------------------------------------------------------------

    fn small_hierarchy() {
        run("SELECT ab.add_place(NULL, 'World', 'world')");
        run("SELECT ab.add_place('world', 'North America', 'continent')");
        run("SELECT ab.add_place('world.north_america', 'United States', 'country', ARRAY['USA', 'United States of America'])");
        run("SELECT ab.add_place('world.north_america.united_states', 'District of Columbia', 'region', ARRAY['Washington DC'])");
        run(r#"SELECT ab.add_place('world.north_america.united_states.district_of_columbia', 'Washington', 'city', '{}', '{"population": 689545}')"#);
        run("SELECT ab.add_place('world.north_america.united_states', 'Washington', 'region')");
    }

    #[pg_test]
    fn labels_and_paths() {
        assert_eq!(one::<String>("SELECT ab.place_label('São Paulo')"), "sao_paulo");
        assert_eq!(one::<String>("SELECT ab.place_label('東京', 'JP-13')"), "jp_13");
        expect_error("ab.place_label('東京')", "22023");
        expect_error("ab.place_label(NULL)", "22004");
        small_hierarchy();
        expect_error("ab.add_place('world.nowhere', 'X')", "42704");
        expect_error("ab.add_place('world', 'North America')", "42710");
        expect_error("ab.add_place('world', 'x', 'place', '{}', '{}', 'bad-label')", "22023");
        expect_error("ab.add_place('world', '  ')", "22023");
        // ltree's own input function rejects the literal (42601).
        expect_error("ab.resolve_ancestors('world.north-america')", "42601");
        expect_error("ab.resolve_ancestors(NULL)", "22004");
        expect_error("ab.resolve_ancestors('')", "22023");
    }

    #[pg_test]
    fn ancestors_and_names() {
        small_hierarchy();
        let chain = json(
            "SELECT jsonb_agg(jsonb_build_array(path::text, name, kind, depth)) FROM ab.resolve_ancestors('world.north_america.united_states.district_of_columbia.washington')",
        );
        assert_eq!(chain, serde_json::json!([
            ["world", "World", "world", 1],
            ["world.north_america", "North America", "continent", 2],
            ["world.north_america.united_states", "United States", "country", 3],
            ["world.north_america.united_states.district_of_columbia", "District of Columbia", "region", 4],
            ["world.north_america.united_states.district_of_columbia.washington", "Washington", "city", 5],
        ]));
        // The same answer as the B-tree probe over the prefixes, written in plain SQL.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM ab.resolve_ancestors('world.north_america.united_states') r
                        FULL JOIN (SELECT path FROM ab.hierarchy WHERE path @> 'world.north_america.united_states') g USING (path)
                        WHERE r.path IS NULL OR g.path IS NULL"),
            0
        );
        expect_error("ab.resolve_ancestors('world.atlantis')", "42704");
        // Called in the select list (a ProjectSet, not a function scan) it returns the same rows.
        assert_eq!(one::<i64>("SELECT count(*) FROM (SELECT ab.resolve_ancestors('world.north_america.united_states')) s"), 3);
        run("SELECT ab.add_place('world.north_america', 'Long', 'x', '{}', '{}', repeat('l', 255))");
        run("SELECT ab.add_place('world.north_america.' || repeat('l', 255), 'Short', 'x', '{}', '{}', 'abcdef')");
        // Paths read from the table (short varlena headers) in, real ltree values out: every
        // returned path is an ancestor-or-self of its node, as deep as the depth column says.
        assert_eq!(
            json("SELECT jsonb_build_array(count(*), bool_and(a.path @> h.path AND nlevel(a.path) = a.depth
                                                          AND a.path = subpath(h.path, 0, a.depth)))
                  FROM ab.hierarchy h, ab.resolve_ancestors(h.path) a"),
            json("SELECT jsonb_build_array(sum(nlevel(path)), true) FROM ab.hierarchy")
        );
        // Many paths in one call: the rows of one call per path, each with its path's position
        // (a path given twice is answered twice); elements read from the table too.
        let paths = "ARRAY['world.north_america.united_states', 'world', 'world.north_america.united_states']::ltree[]";
        assert_eq!(
            json(&format!("SELECT jsonb_agg(jsonb_build_array(ord, path::text, name, kind, depth) ORDER BY ord, depth)
                           FROM ab.resolve_ancestors_many({paths})")),
            json(&format!("SELECT jsonb_agg(jsonb_build_array(p.ord, r.path::text, r.name, r.kind, r.depth) ORDER BY p.ord, r.depth)
                           FROM unnest({paths}) WITH ORDINALITY p(path, ord), ab.resolve_ancestors(p.path) r"))
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM ab.resolve_ancestors_many(ARRAY(SELECT path FROM ab.hierarchy))"),
            one::<i64>("SELECT sum(nlevel(path)) FROM ab.hierarchy")
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.resolve_ancestors_many('{}')"), 0);
        expect_error("ab.resolve_ancestors_many(NULL)", "22004");
        expect_error("ab.resolve_ancestors_many(ARRAY['world', NULL]::ltree[])", "22004");
        expect_error("ab.resolve_ancestors_many(ARRAY['world', 'world.atlantis']::ltree[])", "42704");
        let names = json("SELECT jsonb_agg(jsonb_build_array(path::text, matched)) FROM ab.resolve_name('WASHINGTON')");
        assert_eq!(names[0][0], "world.north_america.united_states.washington", "shallower first");
        assert_eq!(names[1][0], "world.north_america.united_states.district_of_columbia.washington");
        assert_eq!(json("SELECT jsonb_agg(matched) FROM ab.resolve_name('washington dc')"), serde_json::json!(["alias"]));
        assert_eq!(one::<i64>("SELECT count(*) FROM ab.resolve_name('Atlantis')"), 0);
        let e = json(r#"SELECT ab.apply_hierarchy('[{"text": "Washington DC", "entity_type": "city", "confidence": 0.8},
                                                      {"text": "Biden", "entity_type": "person", "confidence": 0.8}]')"#);
        assert_eq!(e[0]["metadata"]["hierarchy_path"], "world.north_america.united_states.district_of_columbia");
        assert_eq!(e[0]["metadata"]["ancestors"].as_array().unwrap().len(), 3);
        assert!(e[1]["metadata"].get("hierarchy_path").is_none());
        run("SELECT ab.refresh_hierarchy_ancestry()");
        assert_eq!(one::<i32>("SELECT jsonb_array_length(ancestors) FROM ab.hierarchy_ancestry WHERE path = 'world.north_america.united_states.district_of_columbia.washington'"), 4);
    }

    #[pg_test]
    fn hierarchy_cache_follows_changes() {
        small_hierarchy();
        let path = "world.north_america.united_states.district_of_columbia";
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM ab.resolve_ancestors('{path}')")), 4);
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM ab.resolve_ancestors('{path}')")), 4);
        assert!(one::<i64>("SELECT hits FROM ab.hierarchy_cache_stats()") >= 1);
        // A rename in this transaction is seen at once; an aborted one never.
        run("UPDATE ab.hierarchy SET name = 'N. America' WHERE path = 'world.north_america'");
        assert_eq!(one::<String>(&format!("SELECT name FROM ab.resolve_ancestors('{path}') WHERE depth = 2")), "N. America");
        run("DO $$ BEGIN UPDATE ab.hierarchy SET name = 'Oops' WHERE path = 'world'; RAISE EXCEPTION 'abort'; EXCEPTION WHEN raise_exception THEN NULL; END $$");
        assert_eq!(one::<String>(&format!("SELECT name FROM ab.resolve_ancestors('{path}') WHERE depth = 1")), "World");
        run("DELETE FROM ab.hierarchy WHERE path = 'world.north_america.united_states.district_of_columbia.washington'");
        expect_error("ab.resolve_ancestors('world.north_america.united_states.district_of_columbia.washington')", "42704");
    }

    #[pg_test]
    fn geographic_plausibility_uses_the_hierarchy() {
        small_hierarchy();
        let out = json(r#"SELECT ab.apply_confidence_calibration('[{"text": "the United States", "entity_type": "country", "confidence": 0.5},
                                                                   {"text": "Narnia", "entity_type": "country", "confidence": 0.5}]')"#);
        assert_eq!(out[0]["metadata"]["confidence_factors"]["geographic_plausibility"], 1.0);
        assert_eq!(out[1]["metadata"]["confidence_factors"]["geographic_plausibility"], 0.0);
    }

    /// Numbers of a context are read from jsonb's binary numerics in place (context.rs); each
    /// must print exactly as `numeric_out` prints it, for hand-picked edge cases (zeros, signs,
    /// base-10000 digit boundaries, scales, exponents, the 16-digit edge of whole numbers read
    /// by value) and 2,000 generated ones.
    #[pg_test]
    fn context_numbers_read_in_place_print_as_numeric_out() {
        use crate::targeting::attributes::{Attr, Attributes};
        use super::super::context::Context;
        let mut literals: Vec<String> = [
            "0", "-0", "0.00", "-0.000", "1", "-1", "2.0", "120", "9999", "10000", "10001", "-10000.5", "99999999",
            "100000000", "0.0001", "0.00012", "0.1", "-0.000000001", "1e-20", "1.5e3", "1E+5", "2.50e-3", "1e400",
            "123456789012345678901234567890.123456789", "3.14159265358979323846", "-999999999999.99990000",
            "9999999999999999", "-9999999999999999", "10000000000000000", "1234567890123456", "12345678901234567",
        ]
        .map(String::from)
        .to_vec();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..2000 {
            let digits: String = (0..1 + next(40)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let point = next(digits.len() as u64 + 1) as usize;
            let sign = if next(2) == 0 { "-" } else { "" };
            let mut lit = format!("{sign}{}", &digits[..point.max(1)]);
            if point < digits.len() && point > 0 {
                lit = format!("{lit}.{}", &digits[point..]);
            }
            // JSON allows no leading zeroes: strip them from the integer part.
            let (s, rest) = lit.split_at(sign.len());
            let (int, frac) = rest.split_once('.').map_or((rest, None), |(i, f)| (i, Some(f)));
            let int = int.trim_start_matches('0');
            lit = format!("{s}{}{}", if int.is_empty() { "0" } else { int }, frac.map_or(String::new(), |f| format!(".{f}")));
            if next(4) == 0 {
                lit = format!("{lit}e{}", next(60) as i64 - 30);
            }
            literals.push(lit);
        }
        for lit in &literals {
            let expected = one::<String>(&format!("SELECT '{lit}'::numeric::text"));
            let text = std::ffi::CString::new(format!("{{\"n\": {lit}}}")).unwrap();
            let datum = unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[text.as_c_str().into_datum()]) }.unwrap();
            let context = unsafe { Context::from_datum(datum, false) };
            let attr = context.attribute(&["n".to_string()]).unwrap_or_else(|| panic!("{lit}: not found"));
            assert_eq!(attr.number_text().as_deref(), Some(expected.as_str()), "{lit}");
            // Whole numbers of up to 16 digits come by value, the others as their text.
            let digits = expected.trim_start_matches('-');
            assert_eq!(matches!(attr, Attr::Integer(_)), !digits.contains('.') && digits.len() <= 16, "{lit}: {attr:?}");
        }
    }

    /// Every key of a context is found, and no other, in a small object (scanned) and a large
    /// one (binary searched, past jsonb's 32-entry offset stride), keys of equal and of
    /// different lengths; values of every kind.
    #[pg_test]
    fn context_attributes_found_in_small_and_large_objects() {
        use crate::targeting::attributes::{Attr, Attributes};
        use super::super::context::Context;
        for n in [1usize, 5, 31, 32, 33, 100] {
            // Names of 2 to 26 bytes: each length class of the key comparison (context.rs,
            // `same_bytes`: bytes, two 4-byte words, two 8-byte words, memcmp).
            let keys: Vec<String> = (0..n).map(|i| format!("{}{i}", "k".repeat(1 + i % 4 + 8 * (i % 3)))).collect();
            let object: serde_json::Map<String, serde_json::Value> = keys.iter().enumerate().map(|(i, k)| {
                let v = match i % 4 {
                    0 => serde_json::json!(format!("v{i}")),
                    1 => serde_json::json!(i),
                    2 => serde_json::json!(i % 8 == 2),
                    _ => serde_json::json!([i, {"deep": i}]),
                };
                (k.clone(), v)
            }).collect();
            let text = std::ffi::CString::new(serde_json::Value::Object(object.clone()).to_string()).unwrap();
            let datum = unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[text.as_c_str().into_datum()]) }.unwrap();
            let context = unsafe { Context::from_datum(datum, false) };
            for k in &keys {
                let got = context.attribute(std::slice::from_ref(k)).map(|a| a.to_value());
                assert_eq!(got.as_ref(), object.get(k), "{n} keys: {k}");
            }
            for missing in ["", "k", "kk", "zzzzzzzzzz", "k1000"] {
                assert_eq!(context.attribute(&[missing.to_string()]), None, "{n} keys: {missing}");
            }
            // A name of a key's length differing in its first, a middle or its last byte.
            for k in &keys {
                for at in [0, k.len() / 2, k.len() - 1] {
                    let mut near = k.clone().into_bytes();
                    near[at] = b'#';
                    let near = String::from_utf8(near).unwrap();
                    assert_eq!(context.attribute(&[near.clone()]), None, "{n} keys: {near}");
                }
            }
            if n > 3 {
                // A dotted path into the nested object of key 3.
                let path = [keys[3].clone(), "1".to_string()];
                assert_eq!(context.attribute(&path), None, "an array is not an object");
            }
            assert!(!matches!(context.attribute(&[keys[0].clone()]), Some(Attr::Null)));
            // `each_of` (one ordered pass over the keys) agrees with a lookup per name: the
            // values given and their order, and the result, for every name, every other one,
            // repeated names, and names missing before, between and after the keys.
            let near = |k: &String| format!("{}#", &k[..k.len() - 1]);
            let sets: Vec<Vec<String>> = vec![
                keys.clone(),
                keys.iter().step_by(2).cloned().collect(),
                keys.iter().flat_map(|k| [k.clone(), k.clone()]).collect(),
                keys.iter().cloned().chain(["".into(), "k".into(), "zzzzzzzzzz".into(), "k1000".into(), near(&keys[n - 1])]).collect(),
                vec![keys[n / 2].clone(), near(&keys[0])],
                vec![],
            ];
            for mut names in sets {
                names.sort_by(|a, b| crate::targeting::attributes::key_order(a, b));
                let mut given = Vec::new();
                let all = context.each_of(&names, |i, v| {
                    given.push((i, v.to_value()));
                    true
                });
                let mut looked_up = Vec::new();
                let found = names.iter().enumerate().all(|(i, name)| {
                    context.attribute(std::slice::from_ref(name)).is_some_and(|v| {
                        looked_up.push((i, v.to_value()));
                        true
                    })
                });
                assert_eq!((all, &given), (found, &looked_up), "{n} keys, names {names:?}");
                // `all_of` (tests run in the pass) as the same tests after lookups: `exists` on
                // every name holds when every name is found (non-ASCII names below).
                let exists = vec![(crate::targeting::condition::Test::Exists, false); names.len()];
                assert_eq!(context.all_of(&names, &exists, 0), found, "{n} keys, names {names:?}");
                // Stopped by its callback at the second name: false, nothing read after it.
                if names.len() > 1 && found {
                    let mut seen = 0;
                    assert!(!context.each_of(&names, |_, _| {
                        seen += 1;
                        seen < 2
                    }));
                    assert_eq!(seen, 2, "{n} keys");
                }
            }
        }
        // Non-ASCII names: jsonb orders keys by byte length, then bytes, and so does
        // `key_order` ("é" is two bytes: after "z", before "zzz").
        let text = std::ffi::CString::new(r#"{"é": 1, "z": 2, "zz": 3, "éé": 4, "ü1": 5, "zzz": 6}"#).unwrap();
        let datum = unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[text.as_c_str().into_datum()]) }.unwrap();
        let context = unsafe { Context::from_datum(datum, false) };
        let mut names: Vec<String> = ["zzz", "é", "ü1", "éé", "z", "zz", "ü"].iter().map(|s| s.to_string()).collect();
        names.sort_by(|a, b| crate::targeting::attributes::key_order(a, b));
        let mut given = Vec::new();
        assert!(!context.each_of(&names, |i, v| {
            given.push((names[i].clone(), v.to_value()));
            true
        }), "\"ü\" is missing");
        let present: Vec<String> = names.iter().filter(|n| *n != "ü").cloned().collect();
        given.clear();
        assert!(context.each_of(&present, |i, v| {
            given.push((present[i].clone(), v.to_value()));
            true
        }));
        let want: Vec<(String, serde_json::Value)> = present.iter().map(|n| (n.clone(), context.attribute(std::slice::from_ref(n)).unwrap().to_value())).collect();
        assert_eq!(given, want);
        assert_eq!(given.len(), 6);
    }

    /// Results built with `pushJsonbValue` (json.rs, `Jsonb`) are the very values `jsonb_in`
    /// makes of the same JSON printed: equal as jsonb and printed alike, for every scalar at the
    /// top level and inside containers, numbers at i64's edges and beyond it (arbitrary
    /// precision), fractions and exponents, escapes and non-ASCII text, empty and nested
    /// containers, duplicate-free keys that jsonb reorders; a NUL character is refused (22023)
    /// as `jsonb_in` refuses `\u0000`.
    #[pg_test]
    fn jsonb_built_directly_equals_jsonb_in() {
        use super::super::json::Jsonb;
        let cases = [
            "null", "true", "false", "0", "-1", "42", "9223372036854775807", "-9223372036854775808",
            "9223372036854775808", "123456789012345678901234567890.123456789", "0.1", "-0.0", "1e-7", "2.5E+10", "1e400",
            r#""""#, r#""text""#, r#""quote \" backslash \\ tab \t newline \n \u0001 é 日本語 😀""#,
            "[]", "{}", "[null, true, 1, 1.5, \"x\", [], {}]",
            r#"{"b": 1, "a": {"long key": [1, {"z": null, "y": "s"}], "k": -3.25}, "aa": [[[]]], "": "empty key"}"#,
            r#"[{"text": "President Biden", "confidence": 0.8125, "span": [0, 15], "metadata": {"type": "who"}}]"#,
        ];
        for case in cases {
            let value: serde_json::Value = serde_json::from_str(case).unwrap_or_else(|e| panic!("{case}: {e}"));
            let text = serde_json::to_string(&value).unwrap();
            let built = Jsonb(value).into_datum().unwrap();
            let cstr = std::ffi::CString::new(text.clone()).unwrap();
            let parsed = unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[cstr.as_c_str().into_datum()]) }.unwrap();
            let equal = unsafe { pgrx::direct_function_call::<bool>(pg_sys::jsonb_eq, &[Some(built), Some(parsed)]) }.unwrap();
            assert!(equal, "{case}: not equal to jsonb_in's");
            let out = |d| unsafe { pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(d)]) }.unwrap().to_str().unwrap().to_owned();
            assert_eq!(out(built), out(parsed), "{case}");
        }
        let nul = std::panic::catch_unwind(|| Jsonb(serde_json::json!({"a": "x\u{0}y"})).into_datum());
        assert!(nul.is_err(), "a NUL character is refused");
    }

    /// jsonb arguments read straight from the container (json.rs, `read_jsonb`) are the values
    /// serde_json parses from `jsonb_out`'s text, as they were read before: for the cases of the
    /// test above, 2,000 random values (nested arrays and objects, integers past 64 bits,
    /// fractions, exponents, escapes, non-ASCII and astral text, empty keys), and nesting at the
    /// limit — both read 127 levels, both refuse 128 and more.
    #[pg_test]
    fn jsonb_arguments_read_directly_equal_serde_json_parsing() {
        use super::super::json::JsonArg;
        fn jsonb(text: &str) -> pg_sys::Datum {
            let cstr = std::ffi::CString::new(text).unwrap();
            unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[cstr.as_c_str().into_datum()]) }.unwrap()
        }
        fn both(text: &str) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
            let d = jsonb(text);
            let printed = unsafe { pgrx::direct_function_call::<&std::ffi::CStr>(pg_sys::jsonb_out, &[Some(d)]) }.unwrap().to_str().unwrap().to_owned();
            let parsed = serde_json::from_str::<serde_json::Value>(&printed).ok();
            // A refusal must be the nesting error (54000), not any other failure.
            let read = PgTryBuilder::new(|| unsafe { JsonArg::from_polymorphic_datum(d, false, pg_sys::JSONBOID) }.map(|a| a.0))
                .catch_others(|e| match e {
                    pg_sys::panic::CaughtError::ErrorReport(r) | pg_sys::panic::CaughtError::PostgresError(r)
                        if r.sql_error_code() == PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED && r.message().contains("nested deeper than 128 levels") =>
                    {
                        None
                    }
                    other => panic!("{text}: not the nesting error: {other:?}"),
                })
                .execute();
            (read, parsed)
        }
        // A small xorshift generator: the same values every run.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn value(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> String {
            const STRINGS: [&str; 8] = ["", "a", "quote \\\" back \\\\ tab \\t nl \\n", "é日本語", "😀 \\ud83d\\ude00", "\\u0001x", "0.5", "key"];
            const NUMBERS: [&str; 10] = ["0", "-7", "12345678901234567890123", "0.1", "-2.50", "1e-7", "6.02E+23", "1e400", "9223372036854775807", "3.141592653589793238462643383279"];
            match next(if depth > 4 { 5 } else { 7 }) {
                0 => "null".into(),
                1 => if next(2) == 0 { "true".into() } else { "false".into() },
                2 | 3 => NUMBERS[next(NUMBERS.len() as u64) as usize].into(),
                4 => format!("\"{}\"", STRINGS[next(STRINGS.len() as u64) as usize]),
                5 => format!("[{}]", (0..next(4)).map(|_| value(next, depth + 1)).collect::<Vec<_>>().join(", ")),
                _ => format!(
                    "{{{}}}",
                    (0..next(4)).map(|i| format!("\"{}{i}\": {}", STRINGS[next(STRINGS.len() as u64) as usize], value(next, depth + 1))).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        let mut texts: Vec<String> = (0..2000).map(|_| value(&mut next, 0)).collect();
        texts.extend(["null", "1.50", "\"top\"", "[]", "{}", r#"{"b": 1, "a": [1, {"z": null}], "": "e"}"#].map(String::from));
        for text in &texts {
            let (read, parsed) = both(text);
            assert!(parsed.is_some(), "{text}: serde_json reads it");
            assert_eq!(read, parsed, "{text}");
        }
        // Arrays only, and objects and arrays in turn (an object's value nests under its key).
        for depth in [126, 127, 128, 129, 200] {
            let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let mixed = format!(
                "{}1{}",
                (0..depth).map(|i| if i % 2 == 0 { "{\"k\": " } else { "[" }).collect::<String>(),
                (0..depth).rev().map(|i| if i % 2 == 0 { "}" } else { "]" }).collect::<String>()
            );
            for text in [arrays, mixed] {
                let (read, parsed) = both(&text);
                assert_eq!(read.is_some(), parsed.is_some(), "{depth} levels: both read it or both refuse it");
                assert_eq!(read.is_some(), depth < 128, "{depth} levels");
                assert_eq!(read, parsed);
            }
        }
    }
}
