-- The events whose ids fall in the ranges [$1[i], $2[i]] (int8[] each), in id order, at most $3:
-- what a consumer at a resume token has not seen.
SELECT e.id, e.test_id, e.type, e.payload
FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi),
     LATERAL (SELECT id, test_id, type, payload FROM ab.events
              WHERE id >= r.lo AND id <= r.hi ORDER BY id LIMIT $3) e
ORDER BY e.id LIMIT $3
