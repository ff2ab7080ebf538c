"""The shared test vectors (core/tests/vectors/*.json): the committed files are what
core/tests/vectors/gen_vectors.py computes now (regenerated here and compared, so the expected
values cannot drift from their source), and the calibration and similarity vectors are what the
SQL functions return. The hashing, bucketing and slice vectors are checked against SQL in
test_hashing.py; all of them against the Rust functions in core/tests/vectors.rs."""
import json
import math
import os
import subprocess
import sys

from operate import ROOT

VECTORS = os.path.join(ROOT, "core", "tests", "vectors")
# Floats that come from another library's code (rapidfuzz) may move by an ulp between its
# versions; every other value is integer arithmetic or a fixed sequence of IEEE operations.
LIBRARY_FLOATS = {"similarity"}


def load(directory, name):
    with open(os.path.join(directory, name), encoding="utf-8") as f:
        return json.load(f)


def same(a, b, path):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and path.rsplit(".", 1)[-1] in LIBRARY_FLOATS:
        assert isinstance(b, float) and math.isclose(a, b, rel_tol=0, abs_tol=1e-15), f"{path}: committed {a}, now {b}"
    else:
        assert type(a) is type(b) and a == b, f"{path}: committed {a!r}, now {b!r}"


def test_committed_vectors_are_what_the_generator_computes(tmp_path):
    subprocess.run([sys.executable, os.path.join(VECTORS, "gen_vectors.py"), str(tmp_path)], check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(n for n in os.listdir(VECTORS) if n.endswith(".json"))
    assert fresh == committed
    assert {"hashing.json", "bucketing.json", "calibration.json", "dedup.json"} <= set(committed)
    for name in committed:
        old, new = load(VECTORS, name), load(tmp_path, name)
        assert old["description"] and old["source"] and old["cases"], name
        same(old, new, name)


def test_calibration_vectors_are_what_the_extension_computes(connect):
    c = connect()
    cases = load(VECTORS, "calibration.json")["cases"]
    weights = c.execute("SELECT base, source_reliability, contextual_consistency, temporal_coherence,"
                        " geographic_plausibility FROM ab.calibration_weights").fetchone()
    for k in cases:
        # The file assumes the default weights: a fresh database's.
        assert list(weights) == k["weights"]
        got = c.execute("SELECT ab.calibrate_confidence(%s, %s, %s, %s, %s)", k["factors"]).fetchone()[0]
        want = k["calibrated"]
        assert got <= 1.0, (k["factors"], got)
        if want in (0.0, 1.0):
            assert got == want, (k["factors"], got)
        else:
            assert abs(got - want) <= 1e-15, (k["factors"], got, want)
    assert any(k["uncapped"] > 1.0 and k["calibrated"] == 1.0 for k in cases), "no case reaches the cap"


def test_similarity_vectors_are_what_the_extension_computes(connect):
    c = connect()
    cases = load(VECTORS, "dedup.json")["cases"]
    rows = c.execute(
        "SELECT ab.entity_similarity(a, b) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS v(a, b, i) ORDER BY i",
        ([k["a"] for k in cases], [k["b"] for k in cases]),
    ).fetchall()
    assert len(rows) == len(cases)
    for k, (got,) in zip(cases, rows):
        who = (k["a"][:40], k["b"][:40])
        if k["similarity"] in (0.0, 1.0):
            assert got == k["similarity"], (who, got)
        else:
            assert abs(got - k["similarity"]) <= 1e-12, (who, got, k["similarity"])
    # Both ends and the middle are covered.
    assert {0.0, 1.0} <= {k["similarity"] for k in cases}
    assert any(0.0 < k["similarity"] < 1.0 for k in cases)
