-- ab.set_source_reliability($1 source_id, $2 reliability, $3 description): insert or update.
INSERT INTO ab.sources (source_id, reliability, description) VALUES ($1, $2, $3)
ON CONFLICT (source_id) DO UPDATE SET reliability = EXCLUDED.reliability, description = EXCLUDED.description
