"""The bucketing algorithm reproduced in Python from the README alone (xxhash's own xxh3),
checked bit for bit against the extension, and the shared test vectors (core/tests/vectors/*.json,
written by core/tests/vectors/gen_vectors.py from Python's xxhash; core/tests/vectors.rs checks the
same files against the Rust functions) checked against the SQL functions."""
import json
import os
import re

import pytest
import xxhash

from conftest import make_test, one
from operate import ROOT

VECTORS = os.path.join(ROOT, "core", "tests", "vectors")


def vector_cases(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    assert cases, name
    return cases


def key(a, b):
    return a.encode() + b"\x00" + b.encode()


def rollout_bucket(flag, unit):
    return xxhash.xxh3_64_intdigest(key(flag, unit), 0) % 10000


def variant_point(test_id, unit):
    return (xxhash.xxh3_64_intdigest(key(test_id, unit), 1) >> 11) * 2.0**-53


def pick(variants, point):
    total = sum(w for _, w in variants)
    target, cumulative = point * total, 0.0
    for name, w in variants:
        cumulative += w
        if w > 0 and target < cumulative:
            return name
    return [n for n, w in variants if w > 0][-1]


def slice_score(test_id, unit):
    return xxhash.xxh3_64_intdigest(key(test_id, unit), 2)


def readme_vectors():
    """The README's table of test vectors, as (SQL call, value) pairs."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("Test vectors (quoted from"):text.index("### Events")]
    return re.findall(r"^\| `(ab\.\w+\('[^']*', '[^']*'\))` \| ([0-9.]+) \|$", table, re.M)


def test_hash_vectors_are_what_python_computes_and_what_the_extension_returns(connect):
    c = connect()
    cases = vector_cases("hashing.json")
    rows = c.execute(
        "SELECT ab.rollout_bucket(a, b), ab.variant_point(a, b)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS v(a, b, i) ORDER BY i",
        ([k["a"] for k in cases], [k["b"] for k in cases]),
    ).fetchall()
    assert len(rows) == len(cases)
    for k, (bucket, point) in zip(cases, rows):
        a, b = k["a"], k["b"]
        who = (a[:40], b[:40], len(b))
        # This file's Python (used by the tests below) agrees with the generator's.
        assert rollout_bucket(a, b) == k["rollout_bucket"], who
        assert variant_point(a, b) == k["variant_point"], who
        assert slice_score(a, b) == k["slice_score"], who
        assert len(key(a, b)) == k["key_bytes"], who
        # The extension returns the vectors bit for bit.
        assert bucket == k["rollout_bucket"], (who, bucket)
        assert point == k["variant_point"], (who, point)


def test_readme_vectors_are_quoted_from_the_vector_file_and_what_the_extension_returns(connect):
    c = connect()
    vectors = readme_vectors()
    assert len(vectors) == 4
    by_pair = {(k["a"], k["b"]): k for k in vector_cases("hashing.json")}
    for call, value in vectors:
        fn, a, b = re.match(r"ab\.(\w+)\('([^']*)', '([^']*)'\)", call).groups()
        expected = by_pair[(a, b)][fn]
        computed = {"rollout_bucket": rollout_bucket, "variant_point": variant_point}[fn](a, b)
        assert str(expected) == value, (call, expected, value)
        assert computed == expected, (call, computed, expected)
        assert one(c, f"SELECT {call}") == expected, call


def test_bucketing_vectors_are_the_extensions_assignments(connect):
    """Every weight set of bucketing.json as a test (variants v0, v1, … with those weights, at
    100 %): ab.assign gives each unit the file's variant."""
    c = connect()
    cases = vector_cases("bucketing.json")
    by_test = {}
    for k in cases:
        by_test.setdefault(k["test_id"], []).append(k)
    assert len(by_test) > 1
    for test_id, group in by_test.items():
        weights = group[0]["weights"]
        assert all(k["weights"] == weights for k in group), test_id
        variants = [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]
        c.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps({
            "test_name": test_id, "test_id": test_id, "champion": variants[0], "challengers": variants[1:],
            "rollout_stages": [100]}),))
        c.execute("SELECT ab.start_test(%s)", (test_id,))
        rows = c.execute(
            "SELECT ab.variant_point(%s, u), a.variant, a.in_rollout, a.reason"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS v(u, i), ab.assign(%s, u) a ORDER BY i",
            (test_id, [k["unit"] for k in group], test_id),
        ).fetchall()
        assert len(rows) == len(group)
        named = [(f"v{i}", w) for i, w in enumerate(weights)]
        for k, (point, variant, in_rollout, reason) in zip(group, rows):
            who = (test_id, k["unit"][:40])
            assert variant_point(test_id, k["unit"]) == k["point"], who
            assert pick(named, k["point"]) == f"v{k['variant_index']}", who
            assert point == k["point"], who
            assert (variant, in_rollout, reason) == (f"v{k['variant_index']}", True, "split"), (who, variant, reason)


SLICE_SETS = sorted({tuple(k["tests"]) for k in vector_cases("slices.json")})


@pytest.mark.parametrize("tests", SLICE_SETS, ids=lambda t: "+".join(t)[:40])
def test_slice_vectors_are_the_extensions_slices(connect, tests):
    c = connect()
    for t in tests:
        make_test(c, t)
    group = [k for k in vector_cases("slices.json") if tuple(k["tests"]) == tests]
    rows = c.execute(
        "SELECT (ab.get_assignment(u)).test_id FROM unnest(%s::text[]) WITH ORDINALITY AS v(u, i) ORDER BY i",
        ([k["unit"] for k in group],),
    ).fetchall()
    assert len(rows) == len(group)
    for k, (test_id,) in zip(group, rows):
        assert max(sorted(tests), key=lambda t: slice_score(t, k["unit"])) == k["test_id"], k["unit"][:40]
        assert test_id == k["test_id"], (k["unit"][:40], test_id)
    if len(tests) > 1:
        assert len({k["test_id"] for k in group}) > 1, "every unit in one slice: the vectors test nothing"


def test_python_reproduces_the_slice_of_every_unit(connect):
    c = connect()
    tests = ["s_b", "s_a", "s_c"]
    for t in tests:
        make_test(c, t)
    units = [f"user-{i}" for i in range(2000)] + ["", "ü-ñ-日本", "\U0001F600", "x" * 5000, "a\tb"]
    rows = c.execute("SELECT u, (ab.get_assignment(u)).test_id FROM unnest(%s::text[]) u", (units,)).fetchall()
    picked = {}
    for u, test_id in rows:
        # Highest score; ties go to the smaller test_id (max keeps the first of equals).
        expected = max(sorted(tests), key=lambda t: slice_score(t, u))
        assert test_id == expected, (u, test_id, expected)
        picked[test_id] = picked.get(test_id, 0) + 1
    assert all(600 < n < 740 for n in picked.values()), picked


def test_python_reproduces_buckets_and_assignments(connect):
    c = connect()
    c.execute(
        """SELECT ab.create_test('{"test_name": "h", "test_id": "h", "champion": {"name": "a", "weight": 5},
           "challengers": [{"name": "b", "weight": 3}, {"name": "c", "weight": 2}], "rollout_stages": [30]}')"""
    )
    c.execute("SELECT ab.start_test('h')")
    units = [f"user-{i}" for i in range(3000)] + ["", "ü-ñ-日本", "x" * 5000]
    rows = c.execute(
        "SELECT u, ab.rollout_bucket('ff.ab_test_h', u), ab.variant_point('h', u), a.variant, a.in_rollout"
        " FROM unnest(%s::text[]) u, ab.assign('h', u) a",
        (units,),
    ).fetchall()
    variants = [("a", 5.0), ("b", 3.0), ("c", 2.0)]
    for u, bucket, point, variant, in_rollout in rows:
        assert bucket == rollout_bucket("ff.ab_test_h", u)
        assert point == variant_point("h", u)
        expected_in = rollout_bucket("ff.ab_test_h", u) < 30 * 100
        assert in_rollout == expected_in
        assert variant == (pick(variants, variant_point("h", u)) if expected_in else "a")
