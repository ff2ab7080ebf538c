"""The bucketing algorithm reproduced in Python from the README alone (xxhash's own xxh3),
checked bit for bit against the extension."""
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


def test_readme_vectors(connect):
    c = connect()
    assert one(c, "SELECT ab.rollout_bucket('ff.ab_routing', 'user-1')") == 5726
    assert one(c, "SELECT ab.rollout_bucket('ff.ab_test_t1', '42')") == 5368
    assert one(c, "SELECT ab.rollout_bucket('ff.x', '')") == 7373
    assert one(c, "SELECT ab.variant_point('t1', '42')") == 0.5657999724948041


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
