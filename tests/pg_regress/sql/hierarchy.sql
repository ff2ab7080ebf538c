-- The place hierarchy: labels, adding places, ancestors, names and aliases, apply_hierarchy.
SELECT ab.place_label('São Paulo'), ab.place_label('Washington, D.C.'), ab.place_label('東京', 'tokyo');
SELECT ab.add_place(NULL, 'World', 'root');
SELECT ab.add_place('world', 'Europe', 'continent');
SELECT ab.add_place('world.europe', 'Germany', 'country', ARRAY['Deutschland', 'DE'], '{"population": 83000000}');
SELECT ab.add_place('world.europe.germany', 'Berlin', 'city', '{}', '{"population": 3600000}');
SELECT ab.add_place('world', 'North America', 'continent');
SELECT ab.add_place('world.north_america', 'Berlin', 'city', '{}', '{"population": 2000}', 'berlin_nh');
SELECT * FROM ab.resolve_ancestors('world.europe.germany.berlin');
SELECT * FROM ab.resolve_ancestors_many(ARRAY['world.europe.germany', 'world.north_america']::ltree[]);
SELECT * FROM ab.resolve_name('berlin');
SELECT * FROM ab.resolve_name('deutschland');
SELECT ab.apply_hierarchy('[{"text": "Berlin", "entity_type": "city", "confidence": 0.9},
                           {"text": "Obama", "entity_type": "person", "confidence": 0.9},
                           {"text": "Atlantis", "entity_type": "place", "confidence": 0.5}]');
SELECT nodes, complete FROM ab.preload_hierarchy();
SELECT * FROM ab.resolve_ancestors('world.north_america.berlin_nh');
SELECT sqlstate_of($$SELECT * FROM ab.resolve_ancestors('world.atlantis')$$);
SELECT sqlstate_of($$SELECT * FROM ab.resolve_ancestors(NULL)$$);
SELECT sqlstate_of($$SELECT ab.place_label('東京')$$);
SELECT sqlstate_of($$SELECT ab.add_place('world.nowhere', 'X')$$);
