-- Remote evaluation: one unit's answers for flags and tests in one call, for the relay's
-- OpenFeature Remote Evaluation Protocol endpoint (relay/src/ofrep.rs), which maps them to
-- OpenFeature's reasons.
--
-- ab.evaluate_for_unit(unit_id, context, keys): a JSON array, in the order of `keys` (NULL:
-- every flag that is not a test's own flag, by name, then every test, by id), of
--   {"key", "kind": "flag", "flag": <ab.explain_flag(key, unit_id, context)>}
--   {"key", "kind": "test", "assignment": <ab.assign(key, unit_id, NULL, context) as JSON>}
--   {"key", "kind": "unknown"}                 (neither a flag nor a test of that name)
-- A name that is both a flag and a test answers (once) as the flag. Read-only. SECURITY DEFINER, so a
-- role with EXECUTE on this function alone (ab_relay) evaluates without reading the
-- configuration tables; it runs the same functions a reader calls, nothing else.
CREATE FUNCTION ab.evaluate_for_unit(unit_id text, context jsonb DEFAULT NULL, keys text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF unit_id IS NULL THEN
        RAISE EXCEPTION 'unit_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF keys IS NULL THEN
        keys := ARRAY(SELECT name FROM ab.flags WHERE name NOT LIKE 'ff.ab\_test\_%' ORDER BY name)
             || ARRAY(SELECT test_id FROM ab.tests t
                      WHERE NOT EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = t.test_id) ORDER BY test_id);
    END IF;
    RETURN coalesce((
        SELECT jsonb_agg(CASE
                   WHEN EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = k.key) THEN
                       jsonb_build_object('key', k.key, 'kind', 'flag', 'flag', ab.explain_flag(k.key, unit_id, context))
                   WHEN EXISTS (SELECT 1 FROM ab.tests t WHERE t.test_id = k.key) THEN
                       jsonb_build_object('key', k.key, 'kind', 'test',
                                          'assignment', (SELECT to_jsonb(a) FROM ab.assign(k.key, unit_id, NULL, context) a))
                   ELSE jsonb_build_object('key', k.key, 'kind', 'unknown') END
               ORDER BY k.ord)
        FROM unnest(keys) WITH ORDINALITY k(key, ord)
        WHERE k.key IS NOT NULL), '[]');
END $$;
