\set r random_zipfian(1, 999989, 1.1)
SELECT count(*) FROM hbench.btree_form((SELECT path FROM hbench.targets WHERE rank = :r));
