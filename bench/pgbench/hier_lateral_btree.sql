\set r random_zipfian(1, 999989, 1.1)
SELECT count(*) FROM hbench.targets t, hbench.btree_form(t.path) WHERE t.rank = :r;
