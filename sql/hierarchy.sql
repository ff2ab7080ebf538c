-- The place hierarchy's ltree-typed API, indexes, cache invalidation and reporting view.

CREATE INDEX hierarchy_path_gist ON ab.hierarchy USING gist (path);

-- Ancestors root first, the node itself last; served from the backend's cache. Written in
-- Rust against ltree's in-memory layout (src/pg/hierarchy.rs), not through pgrx: it takes and
-- returns ltree without text conversions.
CREATE FUNCTION ab.resolve_ancestors(path ltree)
    RETURNS TABLE (path ltree, name text, kind text, depth integer)
    LANGUAGE c STABLE PARALLEL SAFE ROWS 6
    AS 'MODULE_PATHNAME', 'resolve_ancestors_ltree';

-- The chains of many paths in one call (a request's paths: one function scan, not one per
-- path); ord is the position of the row's path in the array, from 1.
CREATE FUNCTION ab.resolve_ancestors_many(paths ltree[])
    RETURNS TABLE (ord integer, path ltree, name text, kind text, depth integer)
    LANGUAGE c STABLE PARALLEL SAFE ROWS 60
    AS 'MODULE_PATHNAME', 'resolve_ancestors_many_ltree';

-- Nodes whose name or alias matches, best match first.
CREATE FUNCTION ab.resolve_name(name text)
    RETURNS TABLE (path ltree, name text, kind text, depth integer, matched text)
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT r.path::ltree, r.name, r.kind, r.depth, r.matched FROM ab._resolve_name(name) r $$;

-- Changes to the hierarchy invalidate every backend's resolution cache at commit.
CREATE TRIGGER hierarchy_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.hierarchy
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.hierarchy_signal');

-- The committed states of ab.hierarchy, counted: backends that preload the hierarchy map one
-- shared image of each state (src/pg/hierarchy_cache.rs). One row; every statement that changes
-- ab.hierarchy bumps it, so transactions that change the hierarchy take turns.
CREATE TABLE ab.hierarchy_version (version bigint NOT NULL);
INSERT INTO ab.hierarchy_version VALUES (0);

CREATE FUNCTION ab.count_hierarchy_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ab.hierarchy_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER hierarchy_count_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.hierarchy
    FOR EACH STATEMENT EXECUTE FUNCTION ab.count_hierarchy_version();

-- Every node with its depth and ancestor chain, for reports; refresh with
-- ab.refresh_hierarchy_ancestry(). (Resolution reads ab.hierarchy itself, so it never lags.)
CREATE MATERIALIZED VIEW ab.hierarchy_ancestry AS
SELECT h.path,
       h.name,
       h.kind,
       nlevel(h.path) AS depth,
       coalesce((SELECT jsonb_agg(jsonb_build_object('path', a.path::text, 'name', a.name, 'kind', a.kind)
                                  ORDER BY nlevel(a.path))
                 FROM ab.hierarchy a
                 WHERE a.path = ANY (ARRAY(SELECT subpath(h.path, 0, n)
                                           FROM generate_series(1, nlevel(h.path) - 1) n))),
                '[]') AS ancestors
FROM ab.hierarchy h;
CREATE UNIQUE INDEX hierarchy_ancestry_path ON ab.hierarchy_ancestry (path);

-- Runs as the extension's owner (a refresh needs the view's owner).
CREATE FUNCTION ab.refresh_hierarchy_ancestry() RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ab.require_primary('ab.refresh_hierarchy_ancestry');
    REFRESH MATERIALIZED VIEW CONCURRENTLY ab.hierarchy_ancestry;
$$;
