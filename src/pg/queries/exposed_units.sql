-- Distinct exposed units in the rollout per variant ($1 = test_id, $2 = from, $3 = until;
-- NULL = open end), for the sample-ratio check.
SELECT coalesce(jsonb_object_agg(variant, n), '{}') FROM (
    SELECT variant, count(DISTINCT unit_id) AS n FROM ab.exposures
    WHERE test_id = $1 AND in_rollout
      AND exposed_at >= coalesce($2::timestamptz, '-infinity') AND exposed_at < coalesce($3::timestamptz, 'infinity')
    GROUP BY variant) e
