-- One extraction request's metrics ($1 test_id, $2 variant, $3 latency_ms, $4 entities_processed,
-- $5 average_confidence, $6 deduplication_rate, $7 extraction_success); returns its id.
INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, entities_processed, average_confidence,
                        deduplication_rate, extraction_success)
VALUES ($1, $2, 'extraction', $3, $4, $5, $6, $7)
RETURNING extraction_id
