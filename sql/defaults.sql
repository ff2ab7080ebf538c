-- Shipped defaults: the rows the install script seeds into settings tables (calibration
-- weights, evaluation and alert thresholds, guardrails) and how a restore keeps the user's.
--
-- pg_dump keeps every row of these tables (pg_extension_config_dump), and pg_restore first runs
-- CREATE EXTENSION, which seeds the defaults again. So a row inserted over a shipped default that
-- nobody changed replaces it instead of colliding with it, and a shipped default the user deleted
-- is remembered (ab.removed_defaults, dumped) and deleted again when the dump is restored. A
-- release that changes a default updates ab.shipped_defaults and the rows still equal to the old
-- one in its upgrade script.

-- What this release ships: one row per seeded row, its key columns and its whole value. Written
-- by the install and upgrade scripts, never dumped (CREATE EXTENSION writes it again).
CREATE TABLE ab.shipped_defaults (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    row_value  jsonb NOT NULL,
    PRIMARY KEY (table_name, key)
);

-- Shipped defaults the user deleted. Dumped, so a restore deletes them again.
CREATE TABLE ab.removed_defaults (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    removed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);

-- The key of a row: the named columns of its jsonb form.
CREATE FUNCTION ab.row_key(row_value jsonb, key_columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.jsonb_object_agg(c, row_value -> c) FROM pg_catalog.unnest(key_columns) c $$;

-- BEFORE INSERT on a seeded table (arguments: its key columns): a row whose key holds an
-- unchanged shipped default replaces it.
CREATE FUNCTION ab.replace_shipped_default() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k jsonb := ab.row_key(to_jsonb(NEW), TG_ARGV);
BEGIN
    EXECUTE format('DELETE FROM %I.%I t WHERE to_jsonb(t) = (SELECT d.row_value FROM ab.shipped_defaults d
                                                             WHERE d.table_name = %L AND d.key = $1)',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_TABLE_NAME)
        USING k;
    DELETE FROM ab.removed_defaults WHERE table_name = TG_TABLE_NAME AND key = k;
    RETURN NEW;
END $$;

-- AFTER DELETE or UPDATE on a seeded table (arguments: its key columns): a shipped default's key
-- that no longer exists is remembered.
CREATE FUNCTION ab.remember_removed_default() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k jsonb := ab.row_key(to_jsonb(OLD), TG_ARGV);
BEGIN
    IF TG_OP = 'UPDATE' AND k = ab.row_key(to_jsonb(NEW), TG_ARGV) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM ab.shipped_defaults WHERE table_name = TG_TABLE_NAME AND key = k) THEN
        INSERT INTO ab.removed_defaults (table_name, key) VALUES (TG_TABLE_NAME, k) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

-- AFTER INSERT on ab.removed_defaults (a restore loading it): the default goes again.
CREATE FUNCTION ab.apply_removed_default() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ab.shipped_defaults WHERE table_name = NEW.table_name) THEN
        RAISE EXCEPTION 'ab.removed_defaults: % has no shipped defaults', NEW.table_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'table_name must be one of calibration_weights, risk_thresholds, alert_thresholds, guardrails';
    END IF;
    EXECUTE format('DELETE FROM ab.%I t WHERE to_jsonb(t) @> $1', NEW.table_name) USING NEW.key;
    RETURN NULL;
END $$;

CREATE TRIGGER removed_defaults_apply AFTER INSERT ON ab.removed_defaults
    FOR EACH ROW EXECUTE FUNCTION ab.apply_removed_default();

INSERT INTO ab.shipped_defaults (table_name, key, row_value)
SELECT 'calibration_weights', ab.row_key(to_jsonb(t), '{singleton}'), to_jsonb(t) FROM ab.calibration_weights t
UNION ALL
SELECT 'risk_thresholds', ab.row_key(to_jsonb(t), '{name}'), to_jsonb(t) FROM ab.risk_thresholds t
UNION ALL
SELECT 'alert_thresholds', ab.row_key(to_jsonb(t), '{name}'), to_jsonb(t) FROM ab.alert_thresholds t
UNION ALL
SELECT 'guardrails', ab.row_key(to_jsonb(t), '{test_id,metric}'), to_jsonb(t) FROM ab.guardrails t;

CREATE TRIGGER calibration_weights_replace_default BEFORE INSERT ON ab.calibration_weights
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('singleton');
CREATE TRIGGER calibration_weights_removed_default AFTER DELETE OR UPDATE ON ab.calibration_weights
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('singleton');
CREATE TRIGGER risk_thresholds_replace_default BEFORE INSERT ON ab.risk_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('name');
CREATE TRIGGER risk_thresholds_removed_default AFTER DELETE OR UPDATE ON ab.risk_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('name');
CREATE TRIGGER alert_thresholds_replace_default BEFORE INSERT ON ab.alert_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('name');
CREATE TRIGGER alert_thresholds_removed_default AFTER DELETE OR UPDATE ON ab.alert_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('name');
CREATE TRIGGER guardrails_replace_default BEFORE INSERT ON ab.guardrails
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('test_id', 'metric');
CREATE TRIGGER guardrails_removed_default AFTER DELETE OR UPDATE ON ab.guardrails
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('test_id', 'metric');

SELECT pg_catalog.pg_extension_config_dump('ab.removed_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('ab.risk_thresholds', '');
SELECT pg_catalog.pg_extension_config_dump('ab.alert_thresholds', '');
SELECT pg_catalog.pg_extension_config_dump('ab.guardrails', '');
