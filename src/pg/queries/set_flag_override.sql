-- ab.set_override on a flag: $1 flag, $2 unit_id, $3 value, $4 expires_at, $5 reason.
INSERT INTO ab.overrides (flag, unit_id, value, expires_at, reason) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (flag, unit_id) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,
                                        reason = EXCLUDED.reason, created_at = now()
