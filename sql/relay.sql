-- What the relay (relay/, pg_ab_relay) needs from the database.

-- One delivery cursor per relay name: every event with id <= last_event_id has been published
-- to Redis (or was never committed). Survives relay restarts; read by ab.relay_lag().
CREATE TABLE ab.relay_cursors (
    relay_name    text PRIMARY KEY CHECK (relay_name <> ''),
    last_event_id bigint NOT NULL DEFAULT 0 CHECK (last_event_id >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- How many committed events each relay has not yet delivered.
CREATE FUNCTION ab.relay_lag()
RETURNS TABLE (relay_name text, last_event_id bigint, pending_events bigint, updated_at timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT c.relay_name, c.last_event_id,
           (SELECT count(*) FROM ab.events e WHERE e.id > c.last_event_id),
           c.updated_at
    FROM ab.relay_cursors c
    ORDER BY c.relay_name
$$;

SELECT pg_catalog.pg_extension_config_dump('ab.relay_cursors', '');

-- Deletes delivered events older than keep: never one that a registered relay has not passed
-- (the slowest cursor bounds it). With no relay registered, age alone decides. A relay name
-- that is no longer used holds pruning back: delete its row from ab.relay_cursors.
-- Runs as the extension's owner, so the ab_relay role prunes without a DELETE grant on ab.events.
CREATE FUNCTION ab.prune_events(keep interval DEFAULT '7 days') RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM ab.require_primary('ab.prune_events');
    IF keep IS NULL OR keep < interval '0' THEN
        RAISE EXCEPTION 'keep must be a non-negative interval, got %', keep
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. SELECT ab.prune_events(''7 days'')';
    END IF;
    DELETE FROM ab.events
    WHERE created_at < now() - keep
      AND (NOT EXISTS (SELECT 1 FROM ab.relay_cursors)
           OR id <= (SELECT min(last_event_id) FROM ab.relay_cursors));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;
