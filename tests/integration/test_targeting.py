"""Targeting in the database (README, "Targeting"): flag rules on a unit's attributes, segments,
id lists, overrides with expiry, explanations, errors that name the path, audit and events, and
the cache seeing every committed change from other sessions. Expected answers come from
independent oracles: python-semver for version precedence, Python's re for regexes, datetime for
times, the README's bucket formula with xxhash for rollouts."""
import json
import re
import time
from datetime import datetime, timezone

import psycopg
import pytest
import semver
import xxhash

from conftest import one


def bucket(flag, unit):
    return xxhash.xxh3_64_intdigest(flag.encode() + b"\x00" + unit.encode(), 0) % 10000


def rules(conn, flag, value):
    conn.execute("SELECT ab.set_flag_rules(%s, %s::jsonb)", (flag, json.dumps(value)))


def enabled(conn, flag, unit, context=None):
    if context is None:
        return one(conn, "SELECT ab.is_enabled(%s, %s)", flag, unit)
    return one(conn, "SELECT ab.is_enabled(%s, %s, %s::jsonb)", flag, unit, json.dumps(context))


def explain(conn, flag, unit, context, traces=False):
    """explain_flag's verdict (enabled, reason, decided_by); with `traces`, also the override and
    the rules' traces."""
    out = one(conn, "SELECT ab.explain_flag(%s, %s, %s::jsonb)", flag, unit, json.dumps(context))
    return out if traces else {k: out[k] for k in ("enabled", "reason", "decided_by")}


@pytest.fixture
def conn(connect):
    c = connect()
    c.execute("SELECT ab.create_flag('ff.t', 'targeted', 0)")
    return c


VERSIONS = ["0.9.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0",
            "1.2.3", "1.10.0", "4.2.0", "4.2.1", "4.10.0", "10.0.0"]


@pytest.mark.parametrize("op,cmp", [("semver_lt", lambda c: c < 0), ("semver_lte", lambda c: c <= 0),
                                    ("semver_gt", lambda c: c > 0), ("semver_gte", lambda c: c >= 0),
                                    ("semver_eq", lambda c: c == 0), ("semver_neq", lambda c: c != 0)])
def test_semver_operators_follow_semver_precedence(conn, op, cmp):
    for ref in ["1.0.0-beta.2", "1.0.0", "4.2.0"]:
        rules(conn, "ff.t", [{"id": "v", "when": {"attribute": "v", "op": op, "value": ref}, "serve": True}])
        got = conn.execute("SELECT v, ab.is_enabled('ff.t', 'u', jsonb_build_object('v', v)) FROM unnest(%s::text[]) v",
                           (VERSIONS,)).fetchall()
        for v, on in got:
            assert on == cmp(semver.Version.parse(v).compare(ref)), f"{v} {op} {ref}"


def test_strings_regex_and_case(conn):
    emails = ["ada@example.com", "Bob@Example.COM", "eve@evil.example.org", "x", ""]
    pattern = r"^[a-z]+@example\.com$"
    rules(conn, "ff.t", [{"id": "re", "when": {"attribute": "email", "op": "regex", "value": pattern}, "serve": True}])
    for e in emails:
        assert enabled(conn, "ff.t", "u", {"email": e}) == bool(re.search(pattern, e)), e
    rules(conn, "ff.t", [{"id": "ci", "when": {"attribute": "email", "op": "ends_with", "value": "@example.com",
                                                "case_insensitive": True}, "serve": True}])
    for e in emails:
        assert enabled(conn, "ff.t", "u", {"email": e}) == e.lower().endswith("@example.com"), e


def test_numbers_times_and_places(conn):
    rules(conn, "ff.t", [{"id": "n", "when": {"all": [
        {"attribute": "seats", "op": "gte", "value": 10},
        {"attribute": "signup_at", "op": "before", "value": "2026-06-01T00:00:00Z"},
        {"attribute": "place", "op": "within", "value": "world.europe"}]}, "serve": True}])
    cutoff = datetime(2026, 6, 1, tzinfo=timezone.utc)
    cases = [(seats, signup, place)
             for seats in [9, 10, 10.5, "11", "ten"]
             for signup in ["2026-05-31T23:59:59Z", "2026-06-01T02:00:00+02:00", "2026-06-01T00:00:01Z", "soon"]
             for place in ["world.europe", "world.europe.germany.berlin", "world.europeana", "world.asia"]]
    for seats, signup, place in cases:
        try:
            n_ok = float(seats) >= 10
        except ValueError:
            n_ok = False
        try:
            t_ok = datetime.fromisoformat(signup.replace("Z", "+00:00")) < cutoff
        except ValueError:
            t_ok = False
        p_ok = place == "world.europe" or place.startswith("world.europe.")
        ctx = {"seats": seats, "signup_at": signup, "place": place}
        assert enabled(conn, "ff.t", "u", ctx) == (n_ok and t_ok and p_ok), ctx


def test_missing_attributes_never_match_and_never_raise(conn):
    rules(conn, "ff.t", [{"id": "a", "when": {"any": [
        {"attribute": "plan", "op": "not_in", "values": ["free"]},
        {"attribute": "v", "op": "semver_gt", "value": "1.0.0"},
        {"attribute": "n", "op": "lt", "value": 5}]}, "serve": True}])
    for ctx in [{}, {"plan": None}, {"other": 1}, {"v": "1.2"}, {"n": "many"}, {"plan": {"nested": 1}}]:
        assert enabled(conn, "ff.t", "u", ctx) is False, ctx
        assert explain(conn, "ff.t", "u", ctx)["reason"] == "not_in_rollout"


def test_first_match_wins_and_rollout_rules_use_the_flags_bucket(conn):
    rules(conn, "ff.t", [
        {"id": "blocked", "when": {"attribute": "country", "op": "eq", "value": "DE"}, "serve": False},
        {"id": "enterprise", "when": {"attribute": "plan", "op": "eq", "value": "enterprise"}, "serve": True},
        {"id": "some", "when": {"attribute": "plan", "op": "exists"}, "rollout_percentage": 30}])
    assert explain(conn, "ff.t", "u1", {"country": "DE", "plan": "enterprise"}) == \
        {"enabled": False, "reason": "rule_off", "decided_by": {"rule": "blocked", "index": 0}}
    assert explain(conn, "ff.t", "u1", {"country": "FR", "plan": "enterprise"}) == \
        {"enabled": True, "reason": "on", "decided_by": {"rule": "enterprise", "index": 1}}
    # The traces: what each rule read, up to the one that applied, and nothing after it.
    traced = explain(conn, "ff.t", "u1", {"country": "FR", "plan": "enterprise"}, traces=True)
    assert traced["override"] is None
    assert [(r["id"], r["matched"], r["condition"]["read"]) for r in traced["rules"]] == \
        [("blocked", False, "FR"), ("enterprise", True, "enterprise")]
    assert traced["rules"][1]["serves"] is True
    assert explain(conn, "ff.t", "u1", {}, traces=True)["rules"][2] == {
        "id": "some", "index": 2, "in_window": True, "matched": False,
        "condition": {"attribute": "plan", "op": "exists", "read": None, "matched": False}}
    units = [f"user-{i}" for i in range(3000)]
    got = dict(conn.execute("SELECT u, ab.is_enabled('ff.t', u, '{\"plan\": \"free\"}') FROM unnest(%s::text[]) u",
                            (units,)).fetchall())
    assert got == {u: bucket("ff.t", u) < 3000 for u in units}
    # No rule applies: the flag's own percentage (0) decides, as without targeting.
    assert not any(r[0] for r in conn.execute("SELECT ab.is_enabled('ff.t', u, '{}') FROM unnest(%s::text[]) u", (units,)))


def test_segments_and_a_large_id_list(conn):
    conn.execute("""SELECT ab.create_segment('eu', '{"attribute": "country", "op": "in", "values": ["DE", "FR"]}')""")
    conn.execute("""SELECT ab.create_segment('eu_big', '{"all": [{"segment": "eu"}, {"attribute": "seats", "op": "gte", "value": 100}]}')""")
    ids = [f"beta-{i}" for i in range(100_000)]
    assert one(conn, "SELECT ab.add_to_id_list('beta', %s)", ids) == 100_000
    assert one(conn, "SELECT ab.add_to_id_list('beta', %s)", ids[:10]) == 0
    rules(conn, "ff.t", [{"id": "beta", "when": {"in_list": "beta"}, "serve": True},
                         {"id": "big", "when": {"segment": "eu_big"}, "serve": True}])
    assert enabled(conn, "ff.t", "beta-99999") and enabled(conn, "ff.t", "beta-0", {})
    assert not enabled(conn, "ff.t", "beta-100000")
    assert enabled(conn, "ff.t", "x", {"country": "FR", "seats": 100})
    assert not enabled(conn, "ff.t", "x", {"country": "US", "seats": 100})
    # Redefining a segment takes effect at once; a cycle is refused and changes nothing.
    conn.execute("""SELECT ab.create_segment('eu', '{"attribute": "country", "op": "in", "values": ["DE", "FR", "IT"]}')""")
    assert enabled(conn, "ff.t", "x", {"country": "IT", "seats": 100})
    with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="cycle: eu -> eu_big -> eu"):
        conn.execute("""SELECT ab.create_segment('eu', '{"segment": "eu_big"}')""")
    assert enabled(conn, "ff.t", "x", {"country": "IT", "seats": 100})
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="used by segment"):
        conn.execute("SELECT ab.delete_segment('eu')")
    assert one(conn, "SELECT ab.remove_from_id_list('beta', ARRAY['beta-5', 'nobody'])") == 1
    assert not enabled(conn, "ff.t", "beta-5")


def test_overrides_win_until_they_expire_and_the_switch_wins_over_them(conn):
    rules(conn, "ff.t", [{"id": "all", "when": {"all": []}, "serve": True}])
    conn.execute("SELECT ab.set_override('ff.t', 'u1', false, now() + interval '2 seconds', 'ticket 7')")
    assert explain(conn, "ff.t", "u1", {}) == {"enabled": False, "reason": "override_off", "decided_by": {"override": False}}
    assert one(conn, "SELECT ab.explain_flag('ff.t', 'u1')") == "override_off"
    assert enabled(conn, "ff.t", "u2")
    time.sleep(2.2)
    assert enabled(conn, "ff.t", "u1"), "an expired override stops applying at its time"
    conn.execute("SELECT ab.set_override('ff.t', 'u3', true)")
    conn.execute("SELECT ab.disable_flag('ff.t')")
    assert not enabled(conn, "ff.t", "u3") and one(conn, "SELECT ab.explain_flag('ff.t', 'u3')") == "disabled"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not in the future"):
        conn.execute("SELECT ab.set_override('ff.t', 'u4', true, now() - interval '1 second')")
    assert one(conn, "SELECT ab.clear_override('ff.t', 'u3')") is True
    assert one(conn, "SELECT ab.clear_override('ff.t', 'u3')") is False


def test_rules_apply_to_dependencies_too(conn):
    conn.execute("SELECT ab.create_flag('ff.child', 'child', 100, true, ARRAY['ff.t'])")
    assert not enabled(conn, "ff.child", "u", {"plan": "pro"})
    rules(conn, "ff.t", [{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"}, "serve": True}])
    assert enabled(conn, "ff.child", "u", {"plan": "pro"})
    assert explain(conn, "ff.child", "u", {"plan": "free"})["reason"] == "dependency_off"


@pytest.mark.parametrize("value,state,fragment", [
    ([{"id": "a", "when": {"attribute": "x", "op": "like", "value": "y"}, "serve": True}], "22023", "rules[0].when.op: unknown operator"),
    ([{"id": "a", "when": {"all": [{"attribute": "v", "op": "semver_gt", "value": "4.2"}]}, "serve": True}], "22023", "rules[0].when.all[0].value"),
    ([{"id": "a", "when": {"attribute": "e", "op": "regex", "value": "(x"}, "serve": True}], "22023", "bad regex"),
    ([{"id": "a", "when": {"segment": "nope"}, "serve": True}], "42704", 'segment "nope" does not exist'),
    ({"id": "a"}, "22023", "rules: must be a JSON array"),
    ([{"id": "a", "when": {"all": []}, "rollout_percentage": 150}], "22023", "rules[0].rollout_percentage"),
], ids=["op", "semver", "regex", "segment", "array", "pct"])
def test_bad_rules_are_refused_with_the_path_and_change_nothing(conn, value, state, fragment):
    rules(conn, "ff.t", [{"id": "keep", "when": {"all": []}, "serve": True}])
    before = (one(conn, "SELECT ab.get_flag_rules('ff.t')"), one(conn, "SELECT count(*) FROM ab.audit"),
              one(conn, "SELECT count(*) FROM ab.events"))
    with pytest.raises(psycopg.Error) as e:
        rules(conn, "ff.t", value)
    assert e.value.sqlstate == state and fragment in str(e.value)
    after = (one(conn, "SELECT ab.get_flag_rules('ff.t')"), one(conn, "SELECT count(*) FROM ab.audit"),
             one(conn, "SELECT count(*) FROM ab.events"))
    assert after == before


def test_bad_calls(conn):
    for sql, state in [
        ("SELECT ab.is_enabled('ff.t', 'u', '[1]')", "22023"),
        ("SELECT ab.is_enabled('ff.nope', 'u', '{}')", "42704"),
        ("SELECT ab.is_enabled('ff.t', NULL, '{}')", "22004"),
        ("SELECT ab.set_flag_rules('ff.nope', '[]')", "42704"),
        ("SELECT ab.create_segment('Bad Name', '{\"all\": []}')", "22023"),
        ("SELECT ab.add_to_id_list('qa', ARRAY[NULL])", "22004"),
        ("SELECT ab.set_override('ff.t', 'u', NULL)", "22004"),
        ("SELECT ab.delete_segment('nope')", "42704"),
        ("SELECT ab.set_override('ff.t', 'u', true, NULL, repeat('x', 1001))", "22023"),
    ]:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql)
        assert e.value.sqlstate == state, sql
    # A reason of 1,000 characters (not bytes) is taken; the refused one above left nothing.
    assert one(conn, "SELECT count(*) FROM ab.overrides WHERE flag = 'ff.t'") == 0
    conn.execute("SELECT ab.set_override('ff.t', 'u', true, NULL, repeat('é', 1000))")
    assert one(conn, "SELECT length(reason) FROM ab.overrides WHERE flag = 'ff.t'") == 1000


def test_changes_are_audited_and_announced(conn):
    conn.execute("""SELECT ab.create_segment('eu', '{"attribute": "country", "op": "eq", "value": "DE"}')""")
    rules(conn, "ff.t", [{"id": "eu", "when": {"segment": "eu"}, "serve": True}])
    conn.execute("SELECT ab.set_override('ff.t', 'u1', true)")
    conn.execute("SELECT ab.clear_override('ff.t', 'u1')")
    rules(conn, "ff.t", [])
    audit = conn.execute("SELECT table_name, row_key, action FROM ab.audit WHERE table_name IN ('segments', 'flag_rules', 'overrides') ORDER BY id").fetchall()
    assert audit == [("segments", "eu", "INSERT"), ("flag_rules", "ff.t", "INSERT"), ("overrides", "ff.t/u1", "INSERT"),
                     ("overrides", "ff.t/u1", "DELETE"), ("flag_rules", "ff.t", "DELETE")]
    events = [r[0] for r in conn.execute("SELECT payload->>'update_type' FROM ab.events WHERE id > 1 ORDER BY id")]
    assert events == ["segment_created", "flag_rules_changed", "flag_override_set", "flag_override_cleared", "flag_rules_changed"]


def test_other_sessions_see_a_committed_change_at_their_next_statement(connect):
    writer, reader = connect(), connect(autocommit=False)
    writer.execute("SELECT ab.create_flag('ff.t', 'targeted', 0)")
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u1', '{\"plan\": \"pro\"}')").fetchone()[0] is False  # cached
    rules(writer, "ff.t", [{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"}, "serve": True}])
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u1', '{\"plan\": \"pro\"}')").fetchone()[0] is True
    writer.execute("SELECT ab.set_override('ff.t', 'u1', false)")
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u1', '{\"plan\": \"pro\"}')").fetchone()[0] is False
    writer.execute("SELECT ab.add_to_id_list('qa', ARRAY['u2'])")
    rules(writer, "ff.t", [{"id": "qa", "when": {"in_list": "qa"}, "serve": True}])
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u2')").fetchone()[0] is True
    writer.execute("SELECT ab.remove_from_id_list('qa', ARRAY['u2'])")
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u2')").fetchone()[0] is False
    # An aborted change is never seen.
    aborted = connect(autocommit=False)
    rules(aborted, "ff.t", [{"id": "everyone", "when": {"all": []}, "serve": True}])
    aborted.rollback()
    assert reader.execute("SELECT ab.is_enabled('ff.t', 'u3')").fetchone()[0] is False
    reader.rollback()


@pytest.fixture
def test_conn(connect):
    c = connect()
    c.execute("""SELECT ab.create_test('{"test_name": "t", "test_id": "tt", "champion": {"name": "champ", "weight": 50},
                  "challengers": [{"name": "chal", "weight": 50}], "rollout_stages": [50, 100]}')""")
    c.execute("SELECT ab.start_test('tt')")
    return c


def assignment(conn, unit, context, test="tt"):
    row = conn.execute("SELECT variant, reason, in_rollout FROM ab.assign(%s, %s, NULL, %s::jsonb)",
                       (test, unit, json.dumps(context))).fetchone()
    return row


def test_a_tests_audience_and_forced_variants(test_conn):
    c = test_conn
    c.execute("""SELECT ab.set_test_targeting('tt', '{
        "audience": {"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]},
        "rules": [{"id": "qa", "when": {"attribute": "email", "op": "ends_with", "value": "@qa.test"}, "variant": "chal"}]}')""")
    units = [f"user-{i}" for i in range(400)]
    for u in units[:50]:
        assert assignment(c, u, {"plan": "free"}) == ("champ", "not_in_audience", False)
        assert assignment(c, u, {}) == ("champ", "not_in_audience", False), "a missing attribute is outside"
        assert assignment(c, u, {"plan": "free", "email": "x@qa.test"}) == ("chal", "forced", True)
    # Inside the audience, the rollout and the split as without targeting (xxhash's bucket).
    plain = dict(c.execute("SELECT u, (ab.assign('tt', u)).reason FROM unnest(%s::text[]) u", (units,)).fetchall())
    c2 = {u: assignment(c, u, {"plan": "pro"})[1] for u in units}
    assert {u: r for u, r in c2.items()} == {u: ("split" if bucket("ff.ab_test_tt", u) < 5000 else "not_in_rollout") for u in units}
    # The context-free call judges the audience on no attributes: everyone is outside it.
    assert set(plain.values()) == {"not_in_audience"}
    assert one(c, "SELECT ab.assign_variant('tt', 'u1', NULL, '{\"email\": \"a@qa.test\"}')") == "chal"
    got = c.execute("SELECT test_id, variant, reason FROM ab.get_assignment('u1', NULL, '{\"email\": \"a@qa.test\"}')").fetchone()
    assert got == ("tt", "chal", "forced")
    assert one(c, "SELECT ab.get_test_targeting('tt')")["rules"][0]["id"] == "qa"
    # Removing the targeting restores the plain assignment.
    c.execute("SELECT ab.set_test_targeting('tt', '{}')")
    assert one(c, "SELECT ab.get_test_targeting('tt')") == {}
    assert assignment(c, "user-1", {"plan": "free"})[1] in ("split", "not_in_rollout")


def test_bad_test_targeting_is_refused_and_changes_nothing(test_conn):
    c = test_conn
    c.execute("""SELECT ab.set_test_targeting('tt', '{"audience": {"attribute": "plan", "op": "exists"}}')""")
    for value, state, fragment in [
        ({"rules": [{"id": "x", "when": {"all": []}, "variant": "gpt5"}]}, "22023", 'rules[0].variant: "gpt5" is not a variant'),
        ({"audience": {"attribute": "v", "op": "semver_gt", "value": "1"}}, "22023", "audience.value"),
        ({"audience": {"segment": "nope"}}, "42704", 'segment "nope" does not exist'),
        ({"colour": "red"}, "22023", 'unknown key "colour"'),
    ]:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT ab.set_test_targeting('tt', %s::jsonb)", (json.dumps(value),))
        assert e.value.sqlstate == state and fragment in str(e.value), value
    assert one(c, "SELECT ab.get_test_targeting('tt')") == {"audience": {"attribute": "plan", "op": "exists"}}
    with pytest.raises(psycopg.errors.UndefinedObject):
        c.execute("SELECT ab.set_test_targeting('nope', '{}')")


def test_test_targeting_reaches_other_sessions_and_is_audited(connect, test_conn):
    reader = connect(autocommit=False)
    assert reader.execute("SELECT (ab.assign('tt', 'u1', NULL, '{}')).reason").fetchone()[0] in ("split", "not_in_rollout")
    test_conn.execute("""SELECT ab.set_test_targeting('tt', '{"audience": {"attribute": "plan", "op": "exists"}}')""")
    assert reader.execute("SELECT (ab.assign('tt', 'u1', NULL, '{}')).reason").fetchone()[0] == "not_in_audience"
    reader.rollback()
    rows = test_conn.execute("SELECT row_key, action FROM ab.audit WHERE table_name = 'test_targeting'").fetchall()
    assert rows == [("tt", "INSERT")]
    assert one(test_conn, "SELECT payload->>'update_type' FROM ab.events ORDER BY id DESC LIMIT 1") == "targeting_changed"


def test_overrides_that_never_expire_and_far_expiries(conn):
    conn.execute("SELECT ab.create_flag('ff.far', '', 0)")
    conn.execute("SELECT ab.set_override('ff.far', 'u1', true, 'infinity')")
    conn.execute("SELECT ab.set_override('ff.far', 'u2', true, '294276-12-31 23:59:59+00')")
    assert enabled(conn, "ff.far", "u1") and enabled(conn, "ff.far", "u2") and not enabled(conn, "ff.far", "u3")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT ab.set_override('ff.far', 'u4', true, '-infinity')")


def test_a_tests_own_flag_takes_no_overrides(test_conn):
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="takes no overrides"):
        test_conn.execute("SELECT ab.set_override('ff.ab_test_tt', 'u1', true)")


def test_segment_usage_is_found_by_name_not_by_pattern(conn):
    conn.execute("""SELECT ab.create_segment('zz_q', '{"all": []}')""")
    conn.execute("""SELECT ab.create_segment('zzxq', '{"all": []}')""")
    rules(conn, "ff.t", [{"id": "r", "when": {"not": {"segment": "zzxq"}}, "serve": True}])
    assert one(conn, "SELECT ab.delete_segment('zz_q')") is True
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT ab.delete_segment('zzxq')")


def test_segment_changes_and_rules_are_serialised(connect, conn):
    conn.execute("""SELECT ab.create_segment('racy', '{"attribute": "c", "op": "eq", "value": "x"}')""")
    writer = connect(autocommit=False)
    rules(writer, "ff.t", [{"id": "r", "when": {"not": {"segment": "racy"}}, "serve": True}])
    other = connect()
    other.execute("SET lock_timeout = '300ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        other.execute("SELECT ab.delete_segment('racy')")  # waits for the rule's transaction
    writer.commit()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="used by the rules"):
        other.execute("SELECT ab.delete_segment('racy')")


def test_a_cycle_cannot_be_closed_from_an_older_snapshot(connect, conn):
    conn.execute("""SELECT ab.create_segment('cx', '{"all": []}')""")
    conn.execute("""SELECT ab.create_segment('cy', '{"all": []}')""")
    rr = connect(autocommit=False)
    rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT 1")
    conn.execute("""SELECT ab.create_segment('cx', '{"segment": "cy"}')""")
    # The snapshot predates cx's change: a serialization failure, not a stale cycle check.
    with pytest.raises(psycopg.errors.SerializationFailure):
        rr.execute("""SELECT ab.create_segment('cy', '{"segment": "cx"}')""")
    rr.rollback()
    with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="cycle"):
        conn.execute("""SELECT ab.create_segment('cy', '{"segment": "cx"}')""")


def test_repeatable_read_sees_targeting_as_of_its_snapshot(connect, conn):
    conn.execute("SELECT ab.set_override('ff.t', 'u1', true)")
    rr = connect(autocommit=False)
    rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert rr.execute("SELECT ab.is_enabled('ff.t', 'u1', '{}')").fetchone()[0] is True
    conn.execute("SELECT ab.set_override('ff.t', 'u1', false)")
    assert rr.execute("SELECT ab.is_enabled('ff.t', 'u1', '{}')").fetchone()[0] is True
    rr.rollback()
    assert enabled(conn, "ff.t", "u1", {}) is False


def test_parallel_statements_read_targeting_once_and_see_each_commit(connect):
    """In parallel mode (here a worker runs the whole plan: force_parallel_mode) no newer
    snapshot can be taken, so what a statement reads is kept for that statement only: answers
    equal the serial ones, and a change committed between two statements is seen by the next."""
    admin, par = connect(), connect()
    admin.execute("SELECT ab.create_flag('ff.par', 'parallel', 0)")
    admin.execute("SELECT ab.add_to_id_list('par', ARRAY(SELECT 'p-' || g FROM generate_series(1, 20000) g))")
    rules(admin, "ff.par", [{"id": "listed", "when": {"in_list": "par"}, "serve": True},
                            {"id": "de", "when": {"attribute": "country", "op": "eq", "value": "DE"}, "serve": True}])
    par.execute("SET force_parallel_mode = on")
    query = """SELECT count(*) FILTER (WHERE ab.is_enabled('ff.par', 'p-' || g, %s::jsonb)) FROM generate_series(1, 30000) g"""
    plan = "\n".join(r[0] for r in par.execute("EXPLAIN " + query.replace("%s", "'{}'")).fetchall())
    assert "Gather" in plan, plan
    assert one(par, query, '{"country": "FR"}') == 20000
    assert one(par, query, '{"country": "DE"}') == 30000
    admin.execute("SELECT ab.remove_from_id_list('par', ARRAY(SELECT 'p-' || g FROM generate_series(1, 5000) g))")
    assert one(par, query, '{"country": "FR"}') == 15000, "the next parallel statement sees the commit"
    rules(admin, "ff.par", [{"id": "fr", "when": {"attribute": "country", "op": "eq", "value": "FR"}, "serve": True}])
    assert one(par, query, '{"country": "FR"}') == 30000
    par.execute("RESET force_parallel_mode")
    assert one(par, query, '{"country": "FR"}') == 30000


def test_every_attribute_of_a_wide_context_is_read_right(conn):
    """The context is read from jsonb's binary layout (src/pg/context.rs): keys past the
    offset stride (every 32nd entry stores an offset), keys of every length and script, and
    values of every type must come back as written."""
    ctx = {}
    for i in range(150):
        key = ("k" * (i % 7 + 1)) + str(i) + ("é" if i % 5 == 0 else "") + ("日本" if i % 11 == 0 else "")
        ctx[key] = [f"v{i}-" + "x" * (i * 13 % 300), i * 1.25, i % 2 == 0, f"Grüße {i} ✓", 10**30 + i][i % 5]
    ctx["nested"] = {"os": {"name": "ios"}}
    ctx["list"] = ["a", "b"]
    body = json.dumps(ctx, ensure_ascii=False)
    keys = list(ctx)[:150]
    for key in keys[::7] + keys[-3:]:
        value = ctx[key]
        op = "eq"
        rules(conn, "ff.t", [{"id": "k", "when": {"attribute": key, "op": op, "value": value}, "serve": True}])
        assert one(conn, "SELECT ab.is_enabled('ff.t', 'u', %s::jsonb)", body) is True, (key, value)
        wrong = (value + 1) if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            (not value) if isinstance(value, bool) else value + "!"
        rules(conn, "ff.t", [{"id": "k", "when": {"attribute": key, "op": op, "value": wrong}, "serve": True}])
        assert one(conn, "SELECT ab.is_enabled('ff.t', 'u', %s::jsonb)", body) is False, (key, wrong)
    rules(conn, "ff.t", [{"id": "n", "when": {"all": [{"attribute": "nested.os.name", "op": "eq", "value": "ios"},
                                                      {"attribute": "list", "op": "in", "values": ["b"]},
                                                      {"attribute": "missing", "op": "not_in", "values": ["x"]}]}, "serve": True}])
    assert one(conn, "SELECT ab.is_enabled('ff.t', 'u', %s::jsonb)", body) is False, "a missing attribute fails not_in"
    rules(conn, "ff.t", [{"id": "n", "when": {"all": [{"attribute": "nested.os.name", "op": "eq", "value": "ios"},
                                                      {"attribute": "list", "op": "in", "values": ["b"]}]}, "serve": True}])
    assert one(conn, "SELECT ab.is_enabled('ff.t', 'u', %s::jsonb)", body) is True
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="context must be a JSON object"):
        conn.execute("SELECT ab.is_enabled('ff.t', 'u', '[1, 2]'::jsonb)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="context must be a JSON object"):
        conn.execute("""SELECT ab.is_enabled('ff.t', 'u', '"DE"'::jsonb)""")
    # JSON null is no context, as SQL NULL is.
    rules(conn, "ff.t", [{"id": "none", "when": {"not": {"attribute": "plan", "op": "exists"}}, "serve": True}])
    assert one(conn, "SELECT array[ab.is_enabled('ff.t', 'u', 'null'::jsonb), ab.is_enabled('ff.t', 'u', NULL), "
                     "ab.is_enabled('ff.t', 'u', '{}')]") == [True, True, True]


def test_contexts_stored_in_a_table_are_read_as_given(conn):
    """A context read from a column arrives with a 1-byte header (small), compressed or stored
    out of line (large), not as a parameter's plain value: each form must be read the same."""
    rules(conn, "ff.t", [{"id": "r", "when": {"all": [{"attribute": "plan", "op": "eq", "value": "pro"},
                                                      {"attribute": "seats", "op": "gte", "value": 10}]}, "serve": True}])
    conn.execute("CREATE TEMP TABLE ctx (id int, c jsonb)")
    conn.execute("ALTER TABLE ctx ALTER c SET STORAGE EXTERNAL")  # large values out of line, uncompressed
    conn.execute("CREATE TEMP TABLE ctx_main (id int, c jsonb)")  # large values compressed in line
    pad_random = "".join(chr(0x41 + (i * 7919) % 26) for i in range(4000))
    rows = [(1, {"plan": "pro", "seats": 12}), (2, {"plan": "pro", "seats": 9}),
            (3, {"plan": "pro", "seats": 10, "pad": "x" * 20000}), (4, {"plan": "free", "seats": 50, "pad": pad_random * 3}),
            (5, {"plan": "pro", "seats": 11, "pad": pad_random})]
    for table in ("ctx", "ctx_main"):
        for id_, c in rows:
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s::jsonb)", (id_, json.dumps(c)))
        got = conn.execute(f"SELECT id, ab.is_enabled('ff.t', 'u', c) FROM {table} ORDER BY id").fetchall()
        assert got == [(1, True), (2, False), (3, True), (4, False), (5, True)], table
    # The forms were those meant: a short header, an out-of-line value, a compressed one.
    sizes = conn.execute("SELECT pg_column_size(c), octet_length(c::text) FROM ctx WHERE id IN (1, 3) ORDER BY id").fetchall()
    assert sizes[0][0] < 127 and sizes[1][0] > 20000, sizes
    compressed = one(conn, "SELECT pg_column_compression(c) IS NOT NULL FROM ctx_main WHERE id = 3")
    assert compressed is True


def test_parallel_reads_within_one_statement_see_its_own_and_rolled_back_changes(connect):
    """The statements of one function share their start time: a change made (or rolled back)
    between two parallel queries of the same function must be seen by the second."""
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.par2', 'parallel', 100)")
    # No workers: the leader itself runs each query's Gather plan in parallel mode, in this
    # backend, where a statement cache of the first query would still be (a worker starts empty).
    conn.execute("SET force_parallel_mode = on")
    conn.execute("SET max_parallel_workers = 0")
    count = "SELECT count(*) FILTER (WHERE ab.is_enabled('ff.par2', 'p-' || g)) FROM generate_series(1, 1000) g"
    conn.execute(f"""CREATE FUNCTION pg_temp.disable_between() RETURNS SETOF bigint LANGUAGE plpgsql AS $$
        BEGIN
            RETURN QUERY {count};
            PERFORM ab.disable_flag('ff.par2');
            RETURN QUERY {count};
        END $$""")
    conn.execute(f"""CREATE FUNCTION pg_temp.disable_rolled_back() RETURNS SETOF bigint LANGUAGE plpgsql AS $$
        BEGIN
            BEGIN
                PERFORM ab.enable_flag('ff.par2');
                RETURN QUERY {count};
                RAISE EXCEPTION 'undo';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
            RETURN QUERY {count};
        END $$""")
    with conn.transaction():
        assert [r[0] for r in conn.execute("SELECT * FROM pg_temp.disable_between()")] == [1000, 0]
        assert [r[0] for r in conn.execute("SELECT * FROM pg_temp.disable_rolled_back()")] == [1000, 0]
