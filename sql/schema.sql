-- pg_ab schema: configuration, assignment state, the events outbox and the audit trail.
-- Loaded by the extension (src/lib.rs, extension_sql_file!) before any function is created.

-- Feature flags. A unit is inside a flag when xxh3(flag, unit) % 10000 < rollout_percentage * 100
-- (pg_ab's hashing; another tool's rule when `hashing` names it).
CREATE TABLE ab.flags (
    name               text PRIMARY KEY
                       CHECK (name ~ '^[A-Za-z0-9_.:-]{1,200}$'),
    description        text NOT NULL DEFAULT '',
    rollout_percentage integer NOT NULL DEFAULT 0
                       CHECK (rollout_percentage BETWEEN 0 AND 100),
    enabled            boolean NOT NULL DEFAULT true,
    depends_on         text[] NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Which tool's hash buckets its units (core/src/experiments/bucketing.rs) and the key that
    -- tool hashed with (NULL: the flag's name).
    hashing            text NOT NULL DEFAULT 'pg_ab'
                       CHECK (hashing IN ('pg_ab', 'growthbook_v1', 'growthbook_v2', 'unleash', 'posthog')),
    hashing_seed       text,
    CONSTRAINT flags_hashing_seed_check CHECK (hashing_seed IS NULL
        OR (hashing <> 'pg_ab' AND octet_length(hashing_seed) BETWEEN 1 AND 200))
);

-- A/B tests. current_stage is the test's own rollout percentage (0 before it starts).
CREATE TABLE ab.tests (
    test_id        text PRIMARY KEY CHECK (test_id ~ '^[a-z0-9_]{1,63}$'),
    test_name      text NOT NULL,
    description    text NOT NULL DEFAULT '',
    champion       text NOT NULL,
    status         text NOT NULL DEFAULT 'draft'
                   CHECK (status IN ('draft', 'active', 'paused', 'rolled_back', 'completed')),
    rollout_stages integer[] NOT NULL DEFAULT '{10,25,50,100}',
    current_stage  integer NOT NULL DEFAULT 0 CHECK (current_stage BETWEEN 0 AND 100),
    sticky         boolean NOT NULL DEFAULT false,
    log_exposures  boolean NOT NULL DEFAULT false,
    bucket_version integer NOT NULL DEFAULT 1,
    status_reason  text,
    winner         text,
    is_default     boolean NOT NULL DEFAULT false,
    config         jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    -- JSON Schema every variant's payload meets (core/src/experiments/payloads.rs); NULL: none.
    payload_schema jsonb,
    -- Which tool's hash buckets its units (core/src/experiments/bucketing.rs) and the key that
    -- tool hashed with (NULL: the test_id).
    hashing        text NOT NULL DEFAULT 'pg_ab'
                   CHECK (hashing IN ('pg_ab', 'growthbook_v1', 'growthbook_v2', 'unleash', 'posthog')),
    hashing_seed   text,
    CONSTRAINT tests_hashing_seed_check CHECK (hashing_seed IS NULL
        OR (hashing <> 'pg_ab' AND octet_length(hashing_seed) BETWEEN 1 AND 200))
);
-- At most one default test: the one whose champion ab.get_champion_assignment() serves.
CREATE UNIQUE INDEX tests_one_default ON ab.tests (is_default) WHERE is_default;
CREATE INDEX tests_active ON ab.tests (status) WHERE status = 'active';

-- Variants in assignment order (ordinal 0 is the champion).
CREATE TABLE ab.variants (
    test_id              text NOT NULL REFERENCES ab.tests ON DELETE CASCADE,
    variant              text NOT NULL,
    ordinal              integer NOT NULL,
    weight               double precision NOT NULL
                         CHECK (weight >= 0 AND weight < 'Infinity'),
    confidence_threshold double precision NOT NULL
                         CHECK (confidence_threshold BETWEEN 0 AND 1),
    -- What assign hands back with the variant (model, temperature, prompt...); NULL: nothing.
    payload              jsonb,
    PRIMARY KEY (test_id, variant),
    UNIQUE (test_id, ordinal)
);

-- Sticky assignments: the first variant a unit got, kept until the test's bucket_version moves.
CREATE TABLE ab.assignments (
    test_id        text NOT NULL REFERENCES ab.tests ON DELETE CASCADE,
    unit_id        text NOT NULL,
    variant        text NOT NULL,
    bucket_version integer NOT NULL,
    assigned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (test_id, unit_id)
);

-- Exposure log, written in the same transaction as the assignment it records.
CREATE TABLE ab.exposures (
    id          bigserial PRIMARY KEY,
    test_id     text NOT NULL REFERENCES ab.tests ON DELETE CASCADE,
    unit_id     text NOT NULL,
    session_id  text,
    variant     text NOT NULL,
    in_rollout  boolean NOT NULL,
    reason      text NOT NULL,
    exposed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exposures_test_variant ON ab.exposures (test_id, variant);

-- The events outbox. Every state change adds a row here and a NOTIFY carrying only its id, so
-- a relay that was away catches up from its cursor and payload size never matters.
-- No foreign key: events outlive the tests they describe.
CREATE SEQUENCE ab.events_id_seq;

CREATE TABLE ab.events (
    id         bigint PRIMARY KEY,  -- set by ab.events_assign_id(), never by a default
    test_id    text,
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_test ON ab.events (test_id, id);
ALTER SEQUENCE ab.events_id_seq OWNED BY ab.events.id;

-- Event ids are handed out after the inserting transaction has an xid (and only here: a column
-- default would be evaluated before this trigger and burn an id per row). A relay that sees a
-- hole in the ids (a later event committed first) keeps the hole open while a transaction that
-- could hold it still runs; with the xid taken first, the holder is always one that had an xid
-- when the hole was seen, so "all of those finished" proves the hole is an abort, not a loss.
CREATE FUNCTION ab.events_assign_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A restore (COPY) loads events with the ids they were dumped with; the relay cursors and
    -- ab.events_id_seq come back with them.
    IF NEW.id IS NOT NULL AND ab.restoring() THEN
        RETURN NEW;
    END IF;
    PERFORM pg_current_xact_id();
    NEW.id := nextval('ab.events_id_seq');
    RETURN NEW;
END $$;

CREATE TRIGGER events_assign_id BEFORE INSERT ON ab.events
    FOR EACH ROW EXECUTE FUNCTION ab.events_assign_id();

CREATE FUNCTION ab.notify_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Restored events were delivered when they happened.
    IF NOT ab.restoring() THEN
        PERFORM pg_notify('pg_ab_events', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON ab.events
    FOR EACH ROW EXECUTE FUNCTION ab.notify_event();

-- Audit trail of every configuration change: who, when, old and new values.
CREATE TABLE ab.audit (
    id          bigserial PRIMARY KEY,
    table_name  text NOT NULL,
    row_key     text NOT NULL,
    action      text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    old_value   jsonb,
    new_value   jsonb,
    changed_by  text NOT NULL DEFAULT current_user,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_row ON ab.audit (table_name, row_key, id);

CREATE FUNCTION ab.audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    row_key text;
BEGIN
    -- A restore (COPY) loads rows that the restored audit trail already describes.
    IF ab.restoring() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;
    END IF;
    row_key := CASE TG_TABLE_NAME
        WHEN 'flags'    THEN coalesce(new_row, old_row) ->> 'name'
        WHEN 'tests'    THEN coalesce(new_row, old_row) ->> 'test_id'
        WHEN 'variants' THEN (coalesce(new_row, old_row) ->> 'test_id') || '/'
                             || (coalesce(new_row, old_row) ->> 'variant')
        WHEN 'segments'   THEN coalesce(new_row, old_row) ->> 'name'
        WHEN 'flag_rules' THEN coalesce(new_row, old_row) ->> 'flag'
        WHEN 'overrides'  THEN (coalesce(new_row, old_row) ->> 'flag') || '/'
                               || (coalesce(new_row, old_row) ->> 'unit_id')
        WHEN 'test_targeting' THEN coalesce(new_row, old_row) ->> 'test_id'
        WHEN 'test_overrides' THEN (coalesce(new_row, old_row) ->> 'test_id') || '/'
                                   || (coalesce(new_row, old_row) ->> 'unit_id')
        WHEN 'schedules' THEN coalesce(new_row, old_row) ->> 'id'
    END;
    INSERT INTO ab.audit (table_name, row_key, action, old_value, new_value)
    VALUES (TG_TABLE_NAME, row_key, TG_OP, old_row, new_row);
    RETURN NULL;
END $$;

CREATE TRIGGER flags_audit AFTER INSERT OR UPDATE OR DELETE ON ab.flags
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER tests_audit AFTER INSERT OR UPDATE OR DELETE ON ab.tests
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER variants_audit AFTER INSERT OR UPDATE OR DELETE ON ab.variants
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();

-- Keep the tables' contents when the extension is dumped.
SELECT pg_catalog.pg_extension_config_dump('ab.flags', '');
SELECT pg_catalog.pg_extension_config_dump('ab.tests', '');
SELECT pg_catalog.pg_extension_config_dump('ab.variants', '');
SELECT pg_catalog.pg_extension_config_dump('ab.assignments', '');
SELECT pg_catalog.pg_extension_config_dump('ab.exposures', '');
SELECT pg_catalog.pg_extension_config_dump('ab.events', '');
SELECT pg_catalog.pg_extension_config_dump('ab.audit', '');
SELECT pg_catalog.pg_extension_config_dump('ab.exposures_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ab.audit_id_seq', '');
