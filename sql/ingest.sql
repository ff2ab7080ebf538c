-- Ingest in batches: the platform writes one metrics row per request (the seed: 42,726 requests/s);
-- one call per row costs a round trip and a statement each, a batch one of each for all its rows.
--
-- ab.submit_extraction_metrics_batch(test_id, metrics jsonb[]): bigint, the rows stored. Each
-- item is {"variant": name, ...the keys of ab.submit_extraction_metrics}; at most 100,000 items
-- (54000 beyond). Every item is checked before anything is stored, an error naming the item
-- (`metrics[3]: "latency_ms" must be 0 or more, got -1`, 22003). One INSERT for the batch, so
-- the statistics fold (ab.fold_metrics) runs once per batch. COPY into ab.metrics is folded
-- the same way (the trigger is per statement) and needs no function.
CREATE FUNCTION ab.submit_extraction_metrics_batch(test_id text, metrics jsonb[])
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
    SELECT ab._submit_extraction_metrics_batch(test_id, to_jsonb(metrics))
$$;
