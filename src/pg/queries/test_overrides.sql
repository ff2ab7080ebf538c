-- A test's overrides ($1 = test_id) as {unit_id: [variant, expires_at in µs since the epoch | null]}.
SELECT coalesce(jsonb_object_agg(unit_id, jsonb_build_array(variant,
           CASE WHEN isfinite(expires_at) THEN least(extract(epoch FROM expires_at) * 1e6, 9e18)::int8 END)), '{}')
FROM ab.test_overrides WHERE test_id = $1
