-- What the relay (relay/, pg_ab_relay) needs from the database.

-- Event ids are handed out after the inserting transaction has an xid. A relay that sees a hole
-- in the ids (a later event committed first) keeps the hole open while any transaction of its
-- read snapshot is still running: with the xid taken first, the holder of a missing id is always
-- one of those, so "all of them finished" proves the hole is permanent (an abort), never a loss.
CREATE FUNCTION ab.events_assign_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_current_xact_id();
    NEW.id := nextval('ab.events_id_seq');
    RETURN NEW;
END $$;

CREATE TRIGGER events_assign_id BEFORE INSERT ON ab.events
    FOR EACH ROW EXECUTE FUNCTION ab.events_assign_id();

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
