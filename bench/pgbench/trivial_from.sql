\set uid random(1, 10000000)
SELECT * FROM length(:uid::text);
