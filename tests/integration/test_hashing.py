"""The bucketing algorithm reproduced in Python from the README alone (xxhash's own xxh3),
checked bit for bit against the extension."""
import re

import xxhash

from conftest import make_test, one


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
    import os
    import re
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        text = f.read()
    table = text[text.index("Test vectors (checked against"):text.index("### Events")]
    return re.findall(r"^\| `(ab\.\w+\('[^']*', '[^']*'\))` \| ([0-9.]+) \|$", table, re.M)


def test_readme_vectors_are_what_python_computes_and_what_the_extension_returns(connect):
    c = connect()
    vectors = readme_vectors()
    assert len(vectors) == 4
    for call, value in vectors:
        fn, a, b = re.match(r"ab\.(\w+)\('([^']*)', '([^']*)'\)", call).groups()
        computed = {"rollout_bucket": rollout_bucket, "variant_point": variant_point}[fn](a, b)
        assert str(computed) == value, (call, computed, value)
        assert one(c, f"SELECT {call}") == computed, call


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
