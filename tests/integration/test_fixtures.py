"""The statistics fixtures (tests/fixtures/stats.json, read by the Rust tests in core/src/analysis/stats.rs)
are what SciPy and statsmodels compute now: regenerated here and compared with the committed
file, so the expected values cannot drift from their source."""
import json
import math
import os
import subprocess
import sys

from operate import ROOT


def same(a, b, path="stats.json"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), f"{path}: committed {a}, SciPy now {b}"
    else:
        assert a == b, path


def test_committed_fixtures_are_what_scipy_computes(tmp_path):
    fresh = tmp_path / "stats.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "gen_stats.py"), str(fresh)],
                   check=True, capture_output=True)
    with open(os.path.join(ROOT, "tests", "fixtures", "stats.json")) as f:
        committed = json.load(f)
    same(committed, json.loads(fresh.read_text()))
    # The case that once underflowed to 0 is in the file.
    assert any(c["observed"] == [6000, 4000] and 0 < c["p_value"] < 1e-80 for c in committed["srm"])
