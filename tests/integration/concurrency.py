"""Invariants under concurrent load: clients assigning (sticky, with exposures) and recording
metrics while others progress rollouts, pause and resume, change weights and finally roll a test
back, for a bounded time on loopback. Shared by tests/integration/test_concurrency.py (a short
run in the test command) and bench/run.sh concurrency (a longer one).

Checked afterwards:
- no metric row lost: every id a writer got back is in ab.metrics, and ab.metric_stats (the
  fold) counts exactly the rows of ab.metrics per test and variant;
- one event per state change, and the events of each test, replayed in id order, are a valid
  walk of the lifecycle (no stage skipped or repeated) that ends in the test's stored state;
- a sticky unit never changed variant (the bucket version is never bumped here);
- no assignment that started after the rollback's commit got the rolled-back test's challenger.
"""
import json
import random
import threading
import time
from collections import Counter, defaultdict

import psycopg

STAGES = [5, 10, 25, 50, 75, 100]
TESTS = ["c1", "c2"]


def prepare(dbname):
    with psycopg.connect(dbname=dbname, autocommit=True) as c:
        for t in TESTS:
            c.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps({
                "test_name": t, "test_id": t, "champion_variant": "baseline_rule_based",
                "challenger_variant": "llm_v2", "rollout_stages": STAGES, "sticky": True, "log_exposures": True}),))
            c.execute("SELECT ab.start_test(%s)", (t,))


def run(dbname, seconds, assigners=4, writers=2, seed=1):
    prepare(dbname)
    stop = threading.Event()
    errors = []
    answers = []          # (test, unit, variant, reason, statement start)
    metric_ids = defaultdict(list)
    calls = Counter()     # successful lifecycle calls per (test, update_type)
    rolled = {}           # test -> server time just after the rollback committed

    def guarded(fn):
        def body(*a):
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001 - reported by the caller
                errors.append(f"{fn.__name__}: {e!r}")
                stop.set()
        return body

    @guarded
    def assigner(k):
        rnd = random.Random(seed * 100 + k)
        with psycopg.connect(dbname=dbname, autocommit=True) as c:
            while not stop.is_set():
                t, u = rnd.choice(TESTS), f"u{rnd.randrange(400)}"
                row = c.execute("SELECT statement_timestamp(), variant, reason FROM ab.assign_and_log(%s, %s)", (t, u)).fetchone()
                answers.append((t, u, row[1], row[2], row[0]))

    @guarded
    def writer(k):
        rnd = random.Random(seed * 200 + k)
        with psycopg.connect(dbname=dbname, autocommit=True) as c:
            while not stop.is_set():
                t, v = rnd.choice(TESTS), rnd.choice(["baseline_rule_based", "llm_v2"])
                if rnd.random() < 0.8:
                    (i,) = c.execute("SELECT ab.submit_extraction_metrics(%s, %s, %s::jsonb)",
                                     (t, v, json.dumps({"latency_ms": rnd.uniform(100, 900), "average_confidence": 0.8,
                                                        "entities_processed": rnd.randrange(10)}))).fetchone()
                else:
                    (i,) = c.execute("SELECT ab.submit_error_metrics(%s, %s, '{\"error_type\": \"TimeoutError\"}')",
                                     (t, v)).fetchone()
                metric_ids[k].append(str(i))

    @guarded
    def lifecycle(k):
        rnd = random.Random(seed * 300 + k)
        with psycopg.connect(dbname=dbname, autocommit=True) as c:
            while not stop.is_set():
                t = rnd.choice(TESTS)
                if t in rolled:
                    continue
                action = rnd.choice(["progress", "pause", "resume", "weights"])
                sql = {"progress": "SELECT ab.progress_rollout(%s)", "pause": "SELECT ab.pause_test(%s, 'load')",
                       "resume": "SELECT ab.resume_test(%s)",
                       "weights": "SELECT ab.update_weights(%s, %s::jsonb)"}[action]
                args = (t,) if action != "weights" else (t, json.dumps({"baseline_rule_based": rnd.uniform(0.1, 1),
                                                                        "llm_v2": rnd.uniform(0.1, 1)}))
                try:
                    out = c.execute(sql, args).fetchone()[0]
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    continue  # e.g. pausing a paused test: refused, nothing changed
                if action == "progress" and out.get("status") == "progressed":
                    calls[(t, "progressed")] += 1
                elif action == "pause":
                    calls[(t, "paused")] += 1
                elif action == "resume":
                    calls[(t, "resumed")] += 1
                elif action == "weights":
                    calls[(t, "weights_changed")] += 1
                time.sleep(rnd.uniform(0, 0.02))

    threads = ([threading.Thread(target=assigner, args=(k,)) for k in range(assigners)]
               + [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
               + [threading.Thread(target=lifecycle, args=(k,)) for k in range(2)])
    for th in threads:
        th.start()
    time.sleep(seconds * 0.7)
    with psycopg.connect(dbname=dbname, autocommit=True) as c:
        # The rollback: its commit time is bounded by the server clock read just after COMMIT.
        c.execute("BEGIN")
        c.execute("SELECT ab.rollback_test('c1', 'load test')")
        c.execute("COMMIT")
        rolled["c1"] = c.execute("SELECT clock_timestamp()").fetchone()[0]
        calls[("c1", "rolled_back")] += 1
    time.sleep(seconds * 0.3)
    stop.set()
    for th in threads:
        th.join(60)
    assert not errors, errors
    return check(dbname, answers, metric_ids, calls, rolled)


def check(dbname, answers, metric_ids, calls, rolled):
    report = {"assignments": len(answers), "metric_rows": sum(map(len, metric_ids.values())),
              "state_changes": sum(calls.values())}
    assert report["assignments"] > 100 and report["metric_rows"] > 50, report
    with psycopg.connect(dbname=dbname) as c:
        for k, ids in metric_ids.items():
            found = c.execute("SELECT count(*) FROM ab.metrics WHERE extraction_id = ANY(%s::uuid[])", (ids,)).fetchone()[0]
            assert found == len(ids), f"writer {k}: {len(ids)} rows recorded, {found} in ab.metrics"
        folded = dict(((t, v), n) for t, v, n in c.execute(
            "SELECT test_id, variant, sum(requests)::bigint FROM ab.metric_stats GROUP BY 1, 2").fetchall())
        raw = dict(((t, v), n) for t, v, n in c.execute(
            "SELECT test_id, variant, count(*) FROM ab.metrics GROUP BY 1, 2").fetchall())
        assert folded == raw, (folded, raw)

        for t in TESTS:
            events = c.execute("SELECT payload->>'update_type', payload->'data' FROM ab.events "
                               "WHERE test_id = %s AND type <> 'flag_created' ORDER BY id", (t,)).fetchall()
            stored = c.execute("SELECT status, current_stage FROM ab.tests WHERE test_id = %s", (t,)).fetchone()
            status, stage = "draft", 0
            seen = Counter()
            for kind, data in events:
                seen[kind] += 1
                if kind == "started":
                    assert (status, data["to_stage"]) == ("draft", STAGES[0]), (t, kind, data)
                    status, stage = "active", STAGES[0]
                elif kind == "progressed":
                    assert status == "active" and data["from_stage"] == stage, (t, kind, data, stage)
                    assert data["to_stage"] == STAGES[STAGES.index(stage) + 1], (t, "stage skipped", data)
                    stage = data["to_stage"]
                elif kind == "paused":
                    assert status == "active", (t, kind, status)
                    status = "paused"
                elif kind == "resumed":
                    assert status == "paused", (t, kind, status)
                    status = "active"
                elif kind == "rolled_back":
                    status = "rolled_back"
            assert (status, stage) == stored, (t, "replayed events end elsewhere", (status, stage), stored)
            for (test, kind), n in calls.items():
                if test == t:
                    assert seen[kind] == n, (t, kind, "events", seen[kind], "calls", n)

    variants = defaultdict(set)
    for t, u, variant, reason, _ in answers:
        if reason in ("split", "sticky"):
            variants[(t, u)].add(variant)
    changed = {k: v for k, v in variants.items() if len(v) > 1}
    assert not changed, f"sticky units changed variant: {list(changed.items())[:5]}"

    late = [a for a in answers if a[0] in rolled and a[4] > rolled[a[0]] and (a[2] != "baseline_rule_based" or a[3] != "rolled_back")]
    assert not late, f"after the rollback committed: {late[:5]}"
    report["after_rollback"] = sum(1 for a in answers if a[0] in rolled and a[4] > rolled[a[0]])
    assert report["after_rollback"] > 0, report
    return report
