\set uid random(1, 200000)
SELECT ab.is_enabled('ff.listed', 'beta-' || :uid);
