\set uid random(1, 10000000)
SELECT ab.assign_variant('bench', :uid);
