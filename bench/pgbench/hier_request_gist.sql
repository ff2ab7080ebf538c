-- One request: the 'where' entities of a batch of documents, 10 Zipf-drawn paths resolved in one statement.
\set r1 random_zipfian(1, 999989, 1.1)
\set r2 random_zipfian(1, 999989, 1.1)
\set r3 random_zipfian(1, 999989, 1.1)
\set r4 random_zipfian(1, 999989, 1.1)
\set r5 random_zipfian(1, 999989, 1.1)
\set r6 random_zipfian(1, 999989, 1.1)
\set r7 random_zipfian(1, 999989, 1.1)
\set r8 random_zipfian(1, 999989, 1.1)
\set r9 random_zipfian(1, 999989, 1.1)
\set r10 random_zipfian(1, 999989, 1.1)
SELECT count(*) FROM unnest(ARRAY[:r1, :r2, :r3, :r4, :r5, :r6, :r7, :r8, :r9, :r10]::bigint[]) r JOIN hbench.targets t ON t.rank = r, hbench.gist_form(t.path);
