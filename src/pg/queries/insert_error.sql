-- One failed request ($1 test_id, $2 variant, $3 extraction_time_ms, $4 error_type,
-- $5 error_message, $6 content_length); returns its id.
INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, error_type, error_message, content_length,
                        extraction_success)
VALUES ($1, $2, 'error', $3, $4, $5, $6, false)
RETURNING extraction_id
