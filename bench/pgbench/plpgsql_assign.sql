\set uid random(1, 10000000)
SELECT * FROM bench.plpgsql_assign('bench', :uid);
