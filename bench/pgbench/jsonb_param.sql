\set uid random(1, 10000000)
-- The same shape as is_enabled_context.sql with a trivial function: the jsonb parameter parsed, nothing evaluated.
SELECT jsonb_typeof(:ctx::jsonb), length(:uid::text);
