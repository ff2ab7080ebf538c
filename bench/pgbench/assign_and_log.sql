\set uid random(1, 10000000)
SELECT * FROM ab.assign_and_log('bench_exposures', :uid);
