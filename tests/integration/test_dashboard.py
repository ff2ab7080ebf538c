"""The relay's dashboard (GET /, /api/dashboard) in a real browser: headless Chromium (Debian's
package) driven by Playwright for Python against a running relay and database.

The page, opened with a token in the address's fragment, shows the test with its status, stages,
traffic against the weights with the SRM verdict, metrics, and the forest plot; a rollback
committed through SQL shows within a second; the relay is stopped while more events commit and
started again, and the page resumes with its resume_token: every event of the database is in its
list exactly once. Screenshots at a laptop's and a phone's width are saved in .run/artifacts
(PG_AB_UPDATE_SCREENSHOT=1 also copies the laptop one to docs/dashboard.png, the README's
picture). No script error at any time, no console error outside the relay's outage."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import sync_playwright

from conftest import one
from relay_harness import token, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".run" / "artifacts"
CHROMIUM = os.environ.get("PG_AB_CHROMIUM", "/usr/bin/chromium")
# As the machine's notes say: without the background-networking flags Chromium keeps trying
# Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def traffic(conn, test_id, n, challenger_success=0.88, challenger_latency=1.6):
    """n requests per variant, measured outside the database: the champion succeeds 95% of the
    time in about 1 ms, the challenger as given (deterministic, so the picture is the same)."""
    conn.execute(
        """SELECT count(ab.submit_extraction_metrics(%(t)s, v.variant, jsonb_build_object(
               'latency_ms', CASE WHEN v.variant = 'llm_v2' THEN %(lat)s ELSE 1.0 END * (0.8 + (g %% 41) / 100.0),
               'entities_processed', 3 + g %% 4, 'average_confidence', 0.82 + (g %% 13) / 100.0, 'deduplication_rate', 0.1,
               'extraction_success', (g %% 100) < CASE WHEN v.variant = 'llm_v2' THEN %(succ)s * 100 ELSE 95 END)))
           FROM generate_series(1, %(n)s) g, (VALUES ('baseline_rule_based'), ('llm_v2')) v(variant)""",
        {"t": test_id, "n": n, "succ": challenger_success, "lat": challenger_latency})


def get(relay, path, tok=None):
    req = urllib.request.Request(f"http://127.0.0.1:{relay.port}{path}")
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


@pytest.fixture
def dashboard_db(dsn, connect):
    conn = connect()
    conn.execute("""SELECT ab.create_test('{"test_name": "LLM extractor v2", "test_id": "dash_llm",
        "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2", "rollout_stages": [10, 50, 100]}')""")
    conn.execute("SELECT ab.start_test('dash_llm')")
    conn.execute("SELECT ab.progress_rollout('dash_llm')")
    conn.execute("SELECT ab.progress_rollout('dash_llm')")
    traffic(conn, "dash_llm", 400)
    # Risk monitoring on (auto rollback off): the evaluation raises an alert, as the relay's
    # periodic job would; the relays here run no risk job (--risk-seconds 0).
    conn.execute("SELECT ab.create_flag('ff.ab_risk_monitoring', 'risk alerts', 100)")
    risk = one(conn, "SELECT ab.evaluate_risk('dash_llm')")
    assert risk["risk_level"] == "high" and not risk["rolled_back"], risk
    conn.execute("""SELECT ab.create_test('{"test_name": "Other", "test_id": "dash_other",
        "champion_variant": "a", "challenger_variant": "b"}')""")
    return dsn.split("=", 1)[1], conn


def test_api_dashboard_answers_for_the_tokens_tests_only(dashboard_db, redis_server, relays):
    name, conn = dashboard_db
    relay = relays(name, redis_server.url, risk_seconds=0)
    status, _, body = get(relay, "/api/dashboard")
    assert status == 401 and "no bearer token" in json.loads(body)["error"]
    status, _, body = get(relay, "/api/dashboard", "not-a-jwt")
    assert status == 401
    status, headers, body = get(relay, "/api/dashboard", token(["dash_llm"]))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    answer = json.loads(body)
    assert answer["grant"] == {"all": False, "test_ids": ["dash_llm"]}
    tests = answer["snapshot"]["tests"]
    assert [t["test_id"] for t in tests] == ["dash_llm"]
    # The evaluation is ab.evaluate's, read in the same statement.
    assert tests[0]["evaluation"] == one(conn, "SELECT ab.evaluate('dash_llm')")
    assert tests[0]["effective_rollout"] == 100 and tests[0]["current_stage"] == 100
    assert tests[0]["latest_risk_alert"]["risk_level"] == "high"
    assert answer["snapshot"]["newest_event_id"] == one(conn, "SELECT max(id) FROM ab.events")
    status, _, body = get(relay, "/api/dashboard", token(["*"]))
    everything = json.loads(body)
    assert everything["grant"]["all"] is True
    # Newest first; a draft has no evaluation.
    assert [(t["test_id"], t["evaluation"] is None) for t in everything["snapshot"]["tests"]] == [("dash_other", True), ("dash_llm", False)]
    for path, kind in [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")]:
        status, headers, _ = get(relay, path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_ab_dashboard_refuses_a_bad_limit(dashboard_db):
    _, conn = dashboard_db
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_tests must be between 1 and 500"):
        conn.execute("SELECT ab.dashboard(NULL, 0)")
    assert len(one(conn, "SELECT ab.dashboard(NULL, 1)")["tests"]) == 1


def test_the_page_shows_a_rollback_within_a_second_and_resumes_after_the_relay_restarts(dashboard_db, redis_server, relays):
    name, conn = dashboard_db
    relay = relays(name, redis_server.url, risk_seconds=0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console_errors, page_errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{relay.port}/#token={token(['*'])}")

            card = page.locator('[data-test-id="dash_llm"]')
            status = card.locator('[data-role="status"]')
            status.filter(has_text="active").wait_for(timeout=10_000)
            page.locator("#connection", has_text="live feed: live").wait_for(timeout=10_000)
            assert "token=" not in page.url, "the token is taken out of the address bar"
            # What the snapshot says, as the page shows it.
            assert card.locator(".stage.current").inner_text() == "100%"
            assert card.locator('[data-role="effective-rollout"]').inner_text() == "100%"
            assert card.get_by_label("latest risk level high").count() == 1
            assert page.locator("#alerts li", has_text="risk high").count() >= 1
            assert card.locator('[data-role="srm"]').inner_text().startswith("SRM: ok")
            assert card.locator('[data-role="verdict"]').inner_text().startswith("llm_v2 vs champion: worse")
            plotted = card.locator("tr[data-metric] svg circle")
            assert plotted.count() >= 4
            success = card.locator('tr[data-metric="success_rate"]')
            assert success.locator("td").nth(1).inner_text() == "−7.4%"  # 0.88 / 0.95 − 1
            assert card.locator("tbody tr", has_text="baseline_rule_based").first.locator("td").nth(3).inner_text() == "400"
            assert page.locator('[data-test-id="dash_other"] [data-role="status"]').inner_text() == "draft"
            # The history replayed on connecting: every event so far.
            ids = one(conn, "SELECT array_agg(id ORDER BY id) FROM ab.events")
            wait_until(lambda: shown_ids(page) == ids, 5, "the events replayed on connecting")
            page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)

            # A rollback committed through SQL is on the page within a second.
            started = time.monotonic()
            conn.execute("SELECT ab.rollback_test('dash_llm', 'challenger errors (browser test)')")
            status.filter(has_text="rolled_back").wait_for(timeout=1_000)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0, elapsed
            card.locator(".verdict", has_text="Reason: challenger errors (browser test)").wait_for(timeout=2_000)
            rolled_back_id = one(conn, "SELECT max(id) FROM ab.events WHERE type = 'rolled_back'")
            page.locator(f'#events li[data-event-id="{rolled_back_id}"]').wait_for(timeout=2_000)
            assert not console_errors and not page_errors, (console_errors, page_errors)

            # The relay stops; events commit meanwhile; the relay starts again on its port.
            assert relay.terminate() == 0
            page.locator("#connection", has_text="reconnecting").wait_for(timeout=5_000)
            conn.execute("SELECT ab.start_test('dash_other')")
            conn.execute("SELECT ab.pause_test('dash_other')")
            conn.execute("SELECT ab.resume_test('dash_other')")
            relay.start()
            page.locator('[data-test-id="dash_other"] [data-role="status"]', has_text="active").wait_for(timeout=15_000)
            page.locator("#connection", has_text="live feed: live").wait_for(timeout=10_000)
            ids = one(conn, "SELECT array_agg(id ORDER BY id) FROM ab.events")
            wait_until(lambda: shown_ids(page) == ids, 5, "every event, once, after the reconnect")
            console_errors.clear()  # the outage's refused connections are the browser's reports

            page.screenshot(path=str(ARTIFACTS / "dashboard-1280-after.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
            page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)
            # One more refresh cycle at this width: still no error.
            page.wait_for_timeout(2_500)
            assert not console_errors and not page_errors, (console_errors, page_errors)
        finally:
            browser.close()
    if os.environ.get("PG_AB_UPDATE_SCREENSHOT") == "1":
        shutil.copy(ARTIFACTS / "dashboard-1280.png", ROOT / "docs" / "dashboard.png")


def shown_ids(page):
    """The event ids in the page's list, oldest first; duplicates kept (they would be a bug)."""
    ids = page.eval_on_selector_all("#events li[data-event-id]", "els => els.map(e => Number(e.dataset.eventId))")
    return sorted(ids) if len(ids) == len(set(ids)) else ids
