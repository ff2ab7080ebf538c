-- Assignment functions. They are hand-written C-language entry points (src/pg/assign.rs) that
-- return the composite ab.assignment directly: no set-returning machinery on the hot path.
CREATE TYPE ab.assignment AS (
    test_id              text,
    variant              text,
    confidence_threshold double precision,
    in_rollout           boolean,
    reason               text,
    -- The variant's payload (ab.variants.payload); NULL when it has none.
    payload              jsonb
);

-- Deterministic, read-only: safe on a hot standby and in parallel workers.
CREATE FUNCTION ab.assign(test_id text, user_id text, session_id text DEFAULT NULL)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign'
    LANGUAGE c STABLE PARALLEL SAFE;

-- Writes the sticky assignment and the exposure row (when the test enables them).
CREATE FUNCTION ab.assign_and_log(test_id text, user_id text, session_id text DEFAULT NULL)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign_and_log'
    LANGUAGE c VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION ab.get_assignment(user_id text, session_id text DEFAULT NULL)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_get_assignment'
    LANGUAGE c STABLE PARALLEL SAFE;

CREATE FUNCTION ab.get_champion_assignment()
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_get_champion_assignment'
    LANGUAGE c STABLE PARALLEL SAFE;
