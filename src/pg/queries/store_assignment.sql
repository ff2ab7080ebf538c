-- A sticky test's first assignment of a unit ($1 test_id, $2 unit_id, $3 variant, $4 bucket_version):
-- insert-if-absent; a row from an older bucket version is replaced. No row back: another
-- transaction stored this unit first.
INSERT INTO ab.assignments AS a (test_id, unit_id, variant, bucket_version)
VALUES ($1, $2, $3, $4)
ON CONFLICT (test_id, unit_id) DO UPDATE
   SET variant = EXCLUDED.variant, bucket_version = EXCLUDED.bucket_version, assigned_at = now()
   WHERE a.bucket_version < EXCLUDED.bucket_version
RETURNING to_jsonb(variant)
