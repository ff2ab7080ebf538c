"""GrowthBook's, Unleash's and PostHog's bucketing hashes as SQL functions (ab.growthbook_hash,
ab.unleash_normalized_hash, ab.posthog_hash): the expected values those projects publish in their
own test suites (core/tests/peers/hashes.json, with sources), and the projects' own Python code
(growthbook's gbhash, posthog's _hash; mmh3, the MurmurHash3 the Unleash Python SDK hashed with)
on ids of every kind: empty, non-ASCII, long."""
import json
import os
import random
import struct

import mmh3
import psycopg
import pytest
from growthbook.core import gbhash
from posthog.feature_flags import _hash as posthog_hash

from conftest import one
from operate import ROOT

with open(os.path.join(ROOT, "core", "tests", "peers", "hashes.json"), encoding="utf-8") as f:
    PUBLISHED = json.load(f)

rng = random.Random(20261130)
IDS = ["", "1", "user-42", "Ünïcødé", "日本語のユーザー", "ا لعربية", "x" * 3000, "a:b", "a.b", "tab\tand space"] + [
    "".join(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff), rng.randint(0x3000, 0xd7ff)]))
            for _ in range(rng.randint(0, 40))) for _ in range(300)]
ASTRAL = ["🙂", "user-😀-42", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]


def fnv1a32_utf16(s):
    """FNV-1a over UTF-16 code units, as GrowthBook's JavaScript SDK (charCodeAt)."""
    h = 0x811C9DC5
    for (unit,) in struct.iter_unpack("<H", s.encode("utf-16-le")):
        h = ((h ^ unit) * 0x01000193) % 2**32
    return h


def test_published_values(conn):
    for row in PUBLISHED["growthbook"]:
        if row["expected"] is None:  # a version that does not exist: the SDKs give null, pg_ab refuses
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="version"):
                conn.execute("SELECT ab.growthbook_hash(%s, %s, %s)", (row["seed"], row["value"], row["version"]))
        else:
            assert one(conn, "SELECT ab.growthbook_hash(%s, %s, %s)", row["seed"], row["value"], row["version"]) == row["expected"], row
    for row in PUBLISHED["unleash"]:
        got = one(conn, "SELECT ab.unleash_normalized_hash(%s, %s, %s, %s)", row["group_id"], row["identifier"], row["modulus"], row["seed"])
        assert got == row["expected"], row
    for row in PUBLISHED["posthog"]:
        got = one(conn, "SELECT ab.posthog_hash(%s, %s, %s)", row["key"], row["distinct_id"], row["salt"])
        assert got == row["expected"], row


def test_growthbook_as_its_sdk_computes(conn):
    seeds = ["", "my-test", "exp-1", "Ünïcødé"]
    got = conn.execute("SELECT s, i, v, ab.growthbook_hash(s, i, v) FROM unnest(%s::text[]) s, unnest(%s::text[]) i, "
                       "unnest(ARRAY[1, 2]) v", (seeds, IDS)).fetchall()
    assert len(got) == len(seeds) * len(IDS) * 2
    for seed, unit, version, value in got:
        assert value == gbhash(seed, unit, version), (seed, unit, version)
    # Outside the Basic Multilingual Plane the JavaScript SDK (UTF-16 code units) is followed;
    # the Python SDK, which XORs code points, differs there.
    for unit in ASTRAL:
        expected = (fnv1a32_utf16(str(fnv1a32_utf16("s" + unit))) % 10000) / 10000
        assert one(conn, "SELECT ab.growthbook_hash('s', %s)", unit) == expected
        assert one(conn, "SELECT ab.growthbook_hash('s', %s, 1)", unit) == (fnv1a32_utf16(unit + "s") % 1000) / 1000


def test_unleash_as_its_sdk_computes(conn):
    for seed, modulus in [(0, 100), (86028157, 1000), (4294967295, 7), (0, 1)]:
        got = conn.execute("SELECT i, ab.unleash_normalized_hash('group', i, %s, %s) FROM unnest(%s::text[]) i",
                           (modulus, seed, IDS + ASTRAL)).fetchall()
        for unit, value in got:
            assert value == mmh3.hash(f"group:{unit}", seed, signed=False) % modulus + 1, (unit, seed, modulus)
    assert one(conn, "SELECT ab.unleash_normalized_hash('g', 'u')") == mmh3.hash("g:u", 0, signed=False) % 100 + 1


def test_posthog_as_its_sdk_computes(conn):
    for salt in ["", "variant", "ß"]:
        got = conn.execute("SELECT i, ab.posthog_hash('flag-key', i, %s) FROM unnest(%s::text[]) i", (salt, IDS + ASTRAL)).fetchall()
        for unit, value in got:
            assert value == posthog_hash("flag-key", unit, salt), (unit, salt)
    assert one(conn, "SELECT ab.posthog_hash('k', 'u')") == posthog_hash("k", "u")


@pytest.mark.parametrize("call,sqlstate", [
    ("ab.growthbook_hash('s', 'u', 3)", "22023"), ("ab.growthbook_hash(NULL, 'u')", "22004"),
    ("ab.growthbook_hash('s', 'u', NULL)", "22004"), ("ab.unleash_normalized_hash('g', 'u', 0)", "22023"),
    ("ab.unleash_normalized_hash('g', 'u', 100, -1)", "22023"), ("ab.unleash_normalized_hash('g', 'u', 100, 4294967296)", "22023"),
    ("ab.unleash_normalized_hash('g', NULL)", "22004"), ("ab.posthog_hash('k', NULL)", "22004"), ("ab.posthog_hash('k', 'u', NULL)", "22004"),
])
def test_bad_arguments(conn, call, sqlstate):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(f"SELECT {call}")
    assert e.value.sqlstate == sqlstate, e.value
    assert str(e.value).strip(), "a message that says what to fix"


@pytest.fixture
def conn(connect):
    return connect()
