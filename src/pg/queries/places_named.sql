-- Places whose name or an alias has the key $1: name matches first, then aliases; shallower
-- first, then larger population, then path.
SELECT coalesce(jsonb_agg(jsonb_build_object('path', path::text, 'name', name, 'kind', kind,
                          'depth', nlevel(path), 'matched', CASE WHEN lookup_keys[1] = $1 THEN 'name' ELSE 'alias' END)
                          ORDER BY lookup_keys[1] = $1 DESC, nlevel(path),
                                   (attributes->>'population')::float8 DESC NULLS LAST, path), '[]')
FROM ab.hierarchy WHERE lookup_keys @> ARRAY[$1]
