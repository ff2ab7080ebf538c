-- A batch of extraction requests of one test ($1) as one statement, so the statement trigger
-- folds them into ab.metric_stats once; columns $2 variant, $3 latency_ms, $4 entities_processed,
-- $5 average_confidence, $6 deduplication_rate, $7 extraction_success. Returns the rows stored.
WITH stored AS (
    INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, entities_processed, average_confidence,
                            deduplication_rate, extraction_success)
    SELECT $1, u.variant, 'extraction', u.latency_ms, u.entities_processed, u.average_confidence,
           u.deduplication_rate, u.extraction_success
    FROM unnest($2::text[], $3::float8[], $4::int4[], $5::float8[], $6::float8[], $7::bool[])
         AS u(variant, latency_ms, entities_processed, average_confidence, deduplication_rate, extraction_success)
    RETURNING 1)
SELECT count(*) FROM stored
