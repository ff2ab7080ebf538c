-- The keys among $1 (text[]) that name a place: one probe of the GIN index on lookup_keys.
SELECT coalesce(jsonb_agg(DISTINCT k), '[]')
FROM ab.hierarchy h, unnest(h.lookup_keys) k
WHERE h.lookup_keys && $1 AND k = ANY($1)
