-- A synthetic hierarchy of 1,000,000 nodes, depth 1–10 (lookups target depth 3–10), for
-- bench/hierarchy.py. Level sizes: 1, 10, 100, 1k, 10k, 100k, 300k, 300k, 200k, 88,889; each
-- node's parent is spread evenly over the level above.
TRUNCATE ab.hierarchy;
DROP SCHEMA IF EXISTS hbench CASCADE;
CREATE SCHEMA hbench;
CREATE TABLE hbench.level_nodes (level int, ord int, path ltree, PRIMARY KEY (level, ord));

DO $$
DECLARE
    sizes int[] := ARRAY[1, 10, 100, 1000, 10000, 100000, 300000, 300000, 200000, 88889];
BEGIN
    INSERT INTO hbench.level_nodes VALUES (1, 0, 'w');
    FOR lvl IN 2..10 LOOP
        INSERT INTO hbench.level_nodes
        SELECT lvl, i, p.path || ('n' || lvl || '_' || i)::ltree
        FROM generate_series(0, sizes[lvl] - 1) i
        JOIN hbench.level_nodes p ON p.level = lvl - 1 AND p.ord = i % sizes[lvl - 1];
    END LOOP;
END $$;

-- Loaded without the triggers' per-statement work mattering: one statement.
INSERT INTO ab.hierarchy (path, name, kind)
SELECT path, 'Node ' || level || '-' || ord, 'level' || level FROM hbench.level_nodes;
ANALYZE ab.hierarchy;

-- Lookup targets: nodes of depth 3–10 in a fixed pseudo-random order, so that Zipf rank r
-- (r = 1 hottest) maps to a node that is not simply the first one created.
CREATE TABLE hbench.targets AS
SELECT row_number() OVER (ORDER BY md5(path::text)) AS rank, path
FROM hbench.level_nodes WHERE level >= 3;
ALTER TABLE hbench.targets ADD PRIMARY KEY (rank);
ANALYZE hbench.targets;

-- The two plain SQL forms a user would write.
CREATE FUNCTION hbench.gist_form(p ltree) RETURNS TABLE (path ltree, name text, kind text)
LANGUAGE sql STABLE AS $$
    SELECT h.path, h.name, h.kind FROM ab.hierarchy h WHERE h.path @> p ORDER BY nlevel(h.path)
$$;
CREATE FUNCTION hbench.btree_form(p ltree) RETURNS TABLE (path ltree, name text, kind text)
LANGUAGE sql STABLE AS $$
    SELECT h.path, h.name, h.kind FROM ab.hierarchy h
    WHERE h.path = ANY (ARRAY(SELECT subpath(p, 0, n) FROM generate_series(1, nlevel(p)) n))
    ORDER BY nlevel(h.path)
$$;

-- Per-call timings inside the backend: clock_timestamp() around each call; returns
-- (mean_us, p95_us). The same loop runs every form.
CREATE FUNCTION hbench.time_calls(form text, ranks int[]) RETURNS TABLE (mean_us float8, p95_us float8)
LANGUAGE plpgsql AS $$
DECLARE
    durations float8[] := '{}';
    t0 timestamptz;
    p ltree;
    r int;
BEGIN
    FOREACH r IN ARRAY ranks LOOP
        SELECT t.path INTO p FROM hbench.targets t WHERE t.rank = r;
        t0 := clock_timestamp();
        IF form = 'cached' THEN
            PERFORM count(*) FROM ab.resolve_ancestors(p);
        ELSIF form = 'gist' THEN
            PERFORM count(*) FROM hbench.gist_form(p);
        ELSE
            PERFORM count(*) FROM hbench.btree_form(p);
        END IF;
        durations := durations || extract(epoch FROM clock_timestamp() - t0) * 1e6;
    END LOOP;
    RETURN QUERY SELECT avg(d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d) FROM unnest(durations) d;
END $$;
