-- Configuration changes invalidate every backend's pg_ab cache at commit (src/pg/cache.rs).
-- The signal is the relcache invalidation of an empty table made for it: the data tables' own
-- relcache entries are also invalidated by VACUUM and ANALYZE, which must not empty the caches
-- (a preloaded hierarchy of a million nodes would be read again).
CREATE TABLE ab.config_signal ();
CREATE TABLE ab.hierarchy_signal ();

-- The trigger's argument names the signal relation to invalidate.
CREATE FUNCTION ab.invalidate_cache_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ab.invalidate_config_cache(TG_ARGV[0]::regclass);
    RETURN NULL;
END $$;

CREATE TRIGGER flags_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.flags
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER tests_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.tests
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER variants_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.variants
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
