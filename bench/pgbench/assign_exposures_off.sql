\set uid random(1, 10000000)
SELECT * FROM ab.assign('bench_exposures', :uid);
