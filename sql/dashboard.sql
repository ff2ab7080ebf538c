-- The dashboard's snapshot: what the relay's page at `/` shows, read in one statement so that
-- tests, evaluations, alerts and health agree with each other (relay/src/dashboard.rs serves it
-- at GET /api/dashboard).
--
-- ab.dashboard(test_ids, max_tests): jsonb
--   {"at": transaction time,
--    "health": <ab.health()>, "alerts": <ab.check_alerts()>,
--    "newest_event_id": the outbox's newest id (0 when empty),
--    "tests": [ <ab.get_test(id)> || {"effective_rollout": min(stage, ff.ab_routing) for an
--               active test else null, "evaluation": <ab.evaluate(id)> (null for a draft),
--               "latest_risk_alert": the payload of the test's newest risk_alert event or null} ]}
-- Tests are those named in test_ids (NULL: every test), newest first, at most max_tests
-- (1–500, else 22023). Read-only. SECURITY DEFINER, like ab.evaluate_for_unit: the relay's role
-- (ab_relay) shows the dashboard without reading the configuration and metrics tables itself.
-- VOLATILE PARALLEL RESTRICTED because ab.health and ab.check_alerts are.
CREATE FUNCTION ab.dashboard(test_ids text[] DEFAULT NULL, max_tests integer DEFAULT 50)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF max_tests IS NULL OR max_tests < 1 OR max_tests > 500 THEN
        RAISE EXCEPTION 'max_tests must be between 1 and 500, got %', coalesce(max_tests::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN jsonb_build_object(
        'at', now(),
        'health', ab.health(),
        'alerts', ab.check_alerts(),
        'newest_event_id', (SELECT coalesce(max(id), 0) FROM ab.events),
        'tests', coalesce((
            SELECT jsonb_agg(ab.get_test(t.test_id) || jsonb_build_object(
                       'effective_rollout', a.effective_rollout,
                       'evaluation', CASE WHEN t.status <> 'draft' THEN ab.evaluate(t.test_id) END,
                       'latest_risk_alert', (SELECT e.payload FROM ab.events e
                                             WHERE e.test_id = t.test_id AND e.type = 'risk_alert'
                                             ORDER BY e.id DESC LIMIT 1))
                   ORDER BY t.created_at DESC, t.test_id)
            FROM (SELECT x.test_id, x.status, x.created_at FROM ab.tests x
                  WHERE dashboard.test_ids IS NULL OR x.test_id = ANY (dashboard.test_ids)
                  ORDER BY x.created_at DESC, x.test_id LIMIT max_tests) t
            LEFT JOIN ab.get_active_tests() a ON a.test_id = t.test_id), '[]'::jsonb));
END $$;
