-- A flag's overrides ($1 = flag) as {unit_id: [value, expires_at in µs since the epoch | null]}
-- ('infinity' and far dates: null, never expiring).
SELECT coalesce(jsonb_object_agg(unit_id, jsonb_build_array(value,
           CASE WHEN isfinite(expires_at) THEN least(extract(epoch FROM expires_at) * 1e6, 9e18)::int8 END)), '{}')
FROM ab.overrides WHERE flag = $1
