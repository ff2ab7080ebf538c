\set uid random(1, 10000000)
SELECT ab.is_enabled('ff.plain', :uid, :ctx);
