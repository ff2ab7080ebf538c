\set r random_zipfian(1, 999989, 1.1)
SELECT count(*) FROM ab.resolve_ancestors((SELECT path FROM hbench.targets WHERE rank = :r));
