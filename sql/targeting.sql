-- Targeting (README, "Targeting"): segments, id lists, flag rules, per-unit overrides and tests'
-- audiences and forced-variant rules. Rules
-- and segments are jsonb in the condition language of pg_ab_core::targeting, checked when
-- written (ab.set_flag_rules, ab.create_segment); the tables are read into each backend's cache
-- and invalidated at commit like the flags (sql/cache.sql's signal).

-- Named, reusable conditions; rules refer to them as {"segment": name}.
CREATE TABLE ab.segments (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,63}$'),
    conditions  jsonb NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Named sets of unit ids ("these 50,000 beta users"); rules refer to them as {"in_list": list}.
-- No size limit: membership is one probe of the primary key, cached per backend.
CREATE TABLE ab.id_lists (
    list     text NOT NULL CHECK (list ~ '^[a-z0-9_-]{1,63}$'),
    unit_id  text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list, unit_id)
);

-- A flag's ordered rules (first match wins), as ab.set_flag_rules checked them.
CREATE TABLE ab.flag_rules (
    flag       text PRIMARY KEY REFERENCES ab.flags (name) ON DELETE CASCADE,
    rules      jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A flag forced on or off for one unit (QA, support) until expires_at (NULL: until removed).
CREATE TABLE ab.overrides (
    flag       text NOT NULL REFERENCES ab.flags (name) ON DELETE CASCADE,
    unit_id    text NOT NULL,
    value      boolean NOT NULL,
    expires_at timestamptz,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag, unit_id)
);

-- A test's variant forced for one unit (QA, support) until expires_at (NULL: until removed);
-- ab.set_override(test_id, unit_id, variant, ...). Reason `override`.
CREATE TABLE ab.test_overrides (
    test_id    text NOT NULL,
    unit_id    text NOT NULL,
    variant    text NOT NULL,
    expires_at timestamptz,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (test_id, unit_id),
    FOREIGN KEY (test_id, variant) REFERENCES ab.variants (test_id, variant) ON DELETE CASCADE
);

-- A test's targeting, as ab.set_test_targeting checked it: {"audience": condition | null,
-- "rules": [{"id", "when", "variant", "valid"}]}.
CREATE TABLE ab.test_targeting (
    test_id    text PRIMARY KEY REFERENCES ab.tests (test_id) ON DELETE CASCADE,
    targeting  jsonb NOT NULL CHECK (jsonb_typeof(targeting) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER segments_audit AFTER INSERT OR UPDATE OR DELETE ON ab.segments
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER flag_rules_audit AFTER INSERT OR UPDATE OR DELETE ON ab.flag_rules
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER overrides_audit AFTER INSERT OR UPDATE OR DELETE ON ab.overrides
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER test_targeting_audit AFTER INSERT OR UPDATE OR DELETE ON ab.test_targeting
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER test_overrides_audit AFTER INSERT OR UPDATE OR DELETE ON ab.test_overrides
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();

CREATE TRIGGER segments_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.segments
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER id_lists_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.id_lists
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER flag_rules_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.flag_rules
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER overrides_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.overrides
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER test_targeting_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.test_targeting
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER test_overrides_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.test_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');

SELECT pg_catalog.pg_extension_config_dump('ab.segments', '');
SELECT pg_catalog.pg_extension_config_dump('ab.id_lists', '');
SELECT pg_catalog.pg_extension_config_dump('ab.flag_rules', '');
SELECT pg_catalog.pg_extension_config_dump('ab.overrides', '');
SELECT pg_catalog.pg_extension_config_dump('ab.test_targeting', '');
SELECT pg_catalog.pg_extension_config_dump('ab.test_overrides', '');

-- With a context: the unit's attributes for the test's audience and forced-variant rules.
CREATE FUNCTION ab.assign(test_id text, user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign_in_context'
    LANGUAGE c STABLE PARALLEL SAFE;

CREATE FUNCTION ab.get_assignment(user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_get_assignment_in_context'
    LANGUAGE c STABLE PARALLEL SAFE;

-- With a context: assign_and_log as assign with a context, plus its writes.
CREATE FUNCTION ab.assign_and_log(test_id text, user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign_and_log_in_context'
    LANGUAGE c VOLATILE PARALLEL UNSAFE;
