-- ab.set_override on a test: $1 test_id, $2 unit_id, $3 variant, $4 expires_at, $5 reason.
INSERT INTO ab.test_overrides (test_id, unit_id, variant, expires_at, reason) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (test_id, unit_id) DO UPDATE SET variant = EXCLUDED.variant, expires_at = EXCLUDED.expires_at,
                                           reason = EXCLUDED.reason, created_at = now()
