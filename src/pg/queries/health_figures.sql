-- Everything ab.health() judges, in one query (the shape analysis::health::report reads).
SELECT jsonb_build_object(
    'thresholds', (SELECT coalesce(jsonb_object_agg(name, value), '{}') FROM ab.alert_thresholds),
    'flags', (SELECT count(*) FROM ab.flags),
    'flags_disabled', (SELECT count(*) FROM ab.flags WHERE NOT enabled),
    'tests_active', (SELECT count(*) FROM ab.tests WHERE status = 'active'),
    'tests_paused', (SELECT count(*) FROM ab.tests WHERE status = 'paused'),
    'cache', (SELECT to_jsonb(c) FROM ab.cache_stats() c),
    'last_metric_age_s', (SELECT extract(epoch FROM now() - max(s.last_recorded_at))
                          FROM ab.metric_stats s JOIN ab.tests t USING (test_id) WHERE t.status = 'active'),
    'latency_sketch', (SELECT ab.sketch_sum(latency_sketch) FROM ab.metric_stats WHERE hour >= date_trunc('hour', now() - interval '1 hour')),
    'newest_event', (SELECT coalesce(max(id), 0) FROM ab.events),
    'relays', (SELECT coalesce(jsonb_agg(jsonb_build_object('relay_name', relay_name, 'last_event_id', last_event_id,
                          'idle_s', extract(epoch FROM now() - updated_at))), '[]') FROM ab.relay_cursors))
