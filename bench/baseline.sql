-- What a user would write without pg_ab: the same assignment logic (routing switch and its
-- dependency, rollout percentage, weighted split) as PL/pgSQL reading the configuration tables
-- on every call. hashtext() stands in for xxh3, which SQL does not have.
CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.flag_on(flag text, unit text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    f ab.flags;
    dep text;
BEGIN
    SELECT * INTO f FROM ab.flags WHERE name = flag;
    IF NOT FOUND OR NOT f.enabled THEN
        RETURN false;
    END IF;
    FOREACH dep IN ARRAY f.depends_on LOOP
        IF NOT bench.flag_on(dep, unit) THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION bench.plpgsql_assign(p_test_id text, p_user text)
RETURNS TABLE (test_id text, variant text, confidence_threshold float8, in_rollout boolean, reason text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t ab.tests;
    f ab.flags;
    routing_pct integer;
    pct integer;
    total float8;
    target float8;
    cumulative float8 := 0;
    v record;
    champion record;
BEGIN
    SELECT * INTO t FROM ab.tests WHERE ab.tests.test_id = p_test_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'test "%" does not exist', p_test_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO champion FROM ab.variants WHERE ab.variants.test_id = p_test_id ORDER BY ordinal LIMIT 1;
    IF t.status <> 'active' THEN
        RETURN QUERY SELECT p_test_id, champion.variant, champion.confidence_threshold, false, 'test_not_active';
        RETURN;
    END IF;
    SELECT * INTO f FROM ab.flags WHERE name = 'ff.ab_test_' || p_test_id;
    IF NOT f.enabled THEN
        RETURN QUERY SELECT p_test_id, champion.variant, champion.confidence_threshold, false, 'flag_off';
        RETURN;
    END IF;
    SELECT rollout_percentage INTO routing_pct FROM ab.flags WHERE name = 'ff.ab_routing';
    IF routing_pct IS NOT NULL AND NOT bench.flag_on('ff.ab_routing', p_user) THEN
        RETURN QUERY SELECT p_test_id, champion.variant, champion.confidence_threshold, false, 'routing_off';
        RETURN;
    END IF;
    pct := least(f.rollout_percentage, coalesce(routing_pct, 100));
    IF abs(hashtext(f.name || p_user)) % 10000 >= pct * 100 THEN
        RETURN QUERY SELECT p_test_id, champion.variant, champion.confidence_threshold, false, 'not_in_rollout';
        RETURN;
    END IF;
    SELECT sum(weight) INTO total FROM ab.variants WHERE ab.variants.test_id = p_test_id;
    target := (abs(hashtext(p_test_id || p_user)) % 1000000) / 1000000.0 * total;
    FOR v IN SELECT * FROM ab.variants WHERE ab.variants.test_id = p_test_id ORDER BY ordinal LOOP
        cumulative := cumulative + v.weight;
        IF v.weight > 0 AND target < cumulative THEN
            RETURN QUERY SELECT p_test_id, v.variant, v.confidence_threshold, true, 'split';
            RETURN;
        END IF;
    END LOOP;
    RETURN QUERY SELECT p_test_id, champion.variant, champion.confidence_threshold, true, 'split';
END $$;
