-- Run once before the other files (cargo pgrx regress): the extension and a helper that turns
-- an error into its SQLSTATE and message, so expected outputs pin both.
CREATE EXTENSION pg_ab CASCADE;
CREATE FUNCTION public.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- The pipeline's measured times, its random extraction id and the backend's cache hit rate
-- differ per run.
CREATE FUNCTION public.stable_pipeline(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT j - 'extraction_id' #- '{processing_metrics,extraction_time_ms}'
             #- '{processing_metrics,processing_time_ms}' #- '{processing_metrics,cache_hit_rate}'
$$;
-- Timestamps and random ids differ per run: strip them from jsonb before printing.
CREATE FUNCTION public.stable(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT j - ARRAY['created_at', 'started_at', 'updated_at', 'ended_at', 'timestamp', 'id', 'evaluated_at']
$$;
-- The seed's routing flag, which every test's rollout passes through.
SELECT ab.create_flag('ff.ab_routing', 'Route traffic to A/B tests', 100) IS NOT NULL AS routing;
