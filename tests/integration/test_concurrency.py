"""Invariants under concurrent load (tests/integration/concurrency.py): a short run here; the
longer one is `bash bench/run.sh concurrency`."""
from concurrency import run


def test_invariants_hold_under_concurrent_assignment_metrics_and_lifecycle_changes(dsn):
    report = run(dsn.split("=", 1)[1], seconds=12)
    assert report["state_changes"] > 10, report
