\set r random_zipfian(1, 999989, 1.1)
SELECT count(path) FROM (SELECT path FROM hbench.targets WHERE rank = :r) t;
