-- Configuration changes invalidate every backend's pg_ab cache at commit (src/pg/cache.rs).
CREATE FUNCTION ab.invalidate_config_cache_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ab.invalidate_config_cache(TG_RELID);
    RETURN NULL;
END $$;

CREATE TRIGGER flags_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.flags
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_config_cache_trigger();
CREATE TRIGGER tests_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.tests
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_config_cache_trigger();
CREATE TRIGGER variants_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.variants
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_config_cache_trigger();
