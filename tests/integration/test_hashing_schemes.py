"""A test or flag imported from GrowthBook, Unleash or PostHog ("hashing": "growthbook_v1" | "growthbook_v2" |
"unleash" | "posthog") puts every unit where that tool's own SDK puts it: the rollout and the
variant, compared unit by unit with GrowthBook's Python SDK, Unleash's engine (yggdrasil, through
its Python binding) and PostHog's Python SDK evaluating the same experiment or flag locally. Also
the refusals: weights the tool would not use as given, a seed for pg_ab's own hashing, a change
of hashing once a test has started; and that a refusal changes nothing."""
import json
import random

import psycopg
import pytest
from growthbook import Experiment, GrowthBook
from posthog.feature_flags import match_feature_flag_properties
from yggdrasil_engine.engine import UnleashEngine

from conftest import one

rng = random.Random(20261130)
# Ids of every kind the tools hash alike: ASCII, Latin-1, CJK, Arabic (the Basic Multilingual
# Plane: beyond it GrowthBook's Python and JavaScript SDKs disagree, see test_peer_hashes.py).
IDS = ["user-1", "42", "Ünïcødé", "日本語のユーザー", "ا لعربية", "a:b", "a.b", "x" * 300] + [
    f"user-{i}" for i in range(1500)] + [
    "".join(chr(rng.choice([rng.randint(0x21, 0x7e), rng.randint(0xa1, 0x2fff), rng.randint(0x3000, 0xd7ff)]))
            for _ in range(rng.randint(1, 30))) for _ in range(300)]
VARIANTS = ["control", "model_b", "model_c"]


# GrowthBook's SDK warns about its own internal call (setFeatures).
pytestmark = pytest.mark.filterwarnings("ignore:setFeatures is deprecated:DeprecationWarning")


@pytest.fixture
def conn(connect):
    return connect()


def create(conn, test_id, scheme, seed, weights, stage):
    variants = [{"name": n, "weight": w} for n, w in zip(VARIANTS, weights)]
    conn.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps({
        "test_name": test_id, "test_id": test_id, "champion": variants[0], "challengers": variants[1:],
        "rollout_stages": [stage, 100], "hashing": scheme, "hashing_seed": seed}),))
    conn.execute("SELECT ab.start_test(%s)", (test_id,))


def pg_ab_variants(conn, test_id, ids):
    """{unit: variant or None (outside the rollout)} as ab.assign gives them."""
    rows = conn.execute("SELECT u, a.variant, a.in_rollout FROM unnest(%s::text[]) u, ab.assign(%s, u) a",
                        (ids, test_id)).fetchall()
    assert len(rows) == len(ids)
    return {u: (v if inside else None) for u, v, inside in rows}


def pg_ab_flag(conn, flag, ids, context=None):
    rows = conn.execute("SELECT u, ab.is_enabled(%s, u, %s::jsonb) FROM unnest(%s::text[]) u",
                        (flag, json.dumps(context) if context else None, ids)).fetchall()
    return dict(rows)


def assert_same(got, expected, what):
    wrong = [(u, got[u], expected[u]) for u in expected if got[u] != expected[u]]
    assert not wrong, f"{what}: {len(wrong)} of {len(expected)} units differ, e.g. {wrong[:5]}"
    # Units fell on every side: a comparison of all-outside or all-one-variant would prove little.
    kinds = set(expected.values())
    assert kinds == {True, False} or kinds == set(VARIANTS) | {None}, f"{what}: only {kinds}"


def growthbook_flag(features, u):
    return GrowthBook(attributes={"id": u}, features=features).is_on("ff.gb")


def test_growthbook_experiments_and_rollouts(conn):
    # A linked experiment: GrowthBook's backend sends its seed and "hashVersion": 2.
    create(conn, "gb", "growthbook_v2", "gb-seed", [0.5, 0.3, 0.2], 40)
    got = pg_ab_variants(conn, "gb", IDS + [""])
    expected = {}
    for u in IDS + [""]:
        r = GrowthBook(attributes={"id": u}).run(Experiment(
            key="gb-key", variations=VARIANTS, weights=[0.5, 0.3, 0.2], coverage=0.4, hashVersion=2, seed="gb-seed"))
        expected[u] = r.value if r.inExperiment else None
    assert expected[""] is None, "GrowthBook never includes an empty id"
    assert_same(got, expected, "GrowthBook linked experiment")
    assert sum(v is not None for v in expected.values()) > len(IDS) * 0.3
    # An inline experiment rule: sent without hashVersion (read as 1) nor seed (the key).
    create(conn, "gb1", "growthbook_v1", "gb1-key", [0.5, 0.3, 0.2], 40)
    expected = {}
    for u in IDS:
        r = GrowthBook(attributes={"id": u}).run(Experiment(key="gb1-key", variations=VARIANTS, weights=[0.5, 0.3, 0.2], coverage=0.4))
        expected[u] = r.value if r.inExperiment else None
    assert_same(pg_ab_variants(conn, "gb1", IDS), expected, "GrowthBook inline experiment (hash version 1)")

    # A rollout rule as GrowthBook's backend sends it: coverage, hashAttribute and seed only.
    conn.execute("SELECT ab.create_flag('ff.gb', 'imported', 30)")
    conn.execute("SELECT ab.set_flag_hashing('ff.gb', 'growthbook_v1', 'gb-feature')")
    rule = {"force": True, "coverage": 0.3, "hashAttribute": "id", "seed": "gb-feature"}
    expected = {u: growthbook_flag({"ff.gb": {"defaultValue": False, "rules": [rule]}}, u) for u in IDS + [""]}
    assert_same(pg_ab_flag(conn, "ff.gb", IDS + [""]), expected, "GrowthBook rollout rule")
    # At 100 % the backend drops the coverage: everyone, the empty id too.
    conn.execute("SELECT ab.update_rollout_percentage('ff.gb', 100)")
    everyone = {"force": True, "hashAttribute": "id", "seed": "gb-feature"}
    assert growthbook_flag({"ff.gb": {"defaultValue": False, "rules": [everyone]}}, "") is True
    assert pg_ab_flag(conn, "ff.gb", IDS + [""]) == {u: True for u in IDS + [""]}
    # A rule that carries "hashVersion": 2 (safe rollouts): growthbook_v2.
    conn.execute("SELECT ab.update_rollout_percentage('ff.gb', 30)")
    conn.execute("SELECT ab.set_flag_hashing('ff.gb', 'growthbook_v2', 'gb-feature')")
    expected = {u: growthbook_flag({"ff.gb": {"defaultValue": False, "rules": [{**rule, "hashVersion": 2}]}}, u) for u in IDS}
    assert_same(pg_ab_flag(conn, "ff.gb", IDS), expected, "GrowthBook rollout rule, hash version 2")


def unleash_engine(feature, group_id, rollout, variants=None):
    strategy = {"name": "flexibleRollout", "parameters": {"rollout": str(rollout), "stickiness": "default", "groupId": group_id}}
    if variants:
        strategy["variants"] = [{"name": n, "weight": w, "stickiness": "default", "weightType": "variable"} for n, w in variants]
    engine = UnleashEngine()
    engine.take_state(json.dumps({"version": 1, "features": [{"name": feature, "enabled": True, "strategies": [strategy]}]}))
    return engine


def test_unleash_experiment_and_rollout(conn):
    # The seed is the strategy's groupId; Unleash's UI sets it to the feature's name.
    create(conn, "un", "unleash", "checkout-model", [500, 300, 200], 40)
    engine = unleash_engine("checkout-model", "checkout-model", 40, zip(VARIANTS, [500, 300, 200]))
    expected = {}
    for u in IDS + [""]:  # an empty userId is hashed like any other (a missing one is not)
        v = engine.get_variant("checkout-model", {"userId": u}).variant
        expected[u] = v.name if v.enabled else None
    assert_same(pg_ab_variants(conn, "un", IDS + [""]), expected, "Unleash experiment")

    conn.execute("SELECT ab.create_flag('ff.un', 'imported', 30)")
    conn.execute("SELECT ab.set_flag_hashing('ff.un', 'unleash', 'new-search')")
    engine = unleash_engine("ff.un", "new-search", 30)
    expected = {u: engine.is_enabled("ff.un", {"userId": u}).is_enabled for u in IDS + [""]}
    assert_same(pg_ab_flag(conn, "ff.un", IDS + [""]), expected, "Unleash gradual rollout")


def test_posthog_experiment_rollout_and_rule(conn):
    create(conn, "ph", "posthog", "ph-flag", [50, 30, 20], 40)
    flag = {"key": "ph-flag", "active": True, "filters": {
        "groups": [{"properties": [], "rollout_percentage": 40}],
        "multivariate": {"variants": [{"key": n, "rollout_percentage": w} for n, w in zip(VARIANTS, [50, 30, 20])]}}}
    expected = {u: match_feature_flag_properties(flag, u, {}, bucketing_value=u) or None for u in IDS}
    assert_same(pg_ab_variants(conn, "ph", IDS), expected, "PostHog multivariate flag")

    # A flag's percentage, then a rule's rollout: both by PostHog's hash of the seed.
    conn.execute("SELECT ab.create_flag('ff.ph', 'imported', 30)")
    conn.execute("SELECT ab.set_flag_hashing('ff.ph', 'posthog', 'ph-boolean')")
    flag = {"key": "ph-boolean", "active": True, "filters": {"groups": [{"properties": [], "rollout_percentage": 30}]}}
    expected = {u: match_feature_flag_properties(flag, u, {}, bucketing_value=u) for u in IDS}
    assert_same(pg_ab_flag(conn, "ff.ph", IDS), expected, "PostHog rollout")
    conn.execute("""SELECT ab.set_flag_rules('ff.ph', '[{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"},
                                                       "rollout_percentage": 70}]')""")
    flag["filters"]["groups"][0]["rollout_percentage"] = 70
    expected = {u: match_feature_flag_properties(flag, u, {}, bucketing_value=u) for u in IDS}
    assert_same(pg_ab_flag(conn, "ff.ph", IDS, {"plan": "pro"}), expected, "PostHog rollout in a rule")


def test_refusals_change_nothing(conn):
    def config(scheme, weights, seed=None):
        return json.dumps({"test_name": "r", "test_id": "r", "champion": {"name": "a", "weight": weights[0]},
                           "challengers": [{"name": "b", "weight": weights[1]}], "hashing": scheme, "hashing_seed": seed})
    for scheme, weights, seed, words in [
        ("posthog", [0.5, 0.5], None, "sum to 100"),
        ("unleash", [500, 499.5], None, "whole numbers"),
        ("growthbook_v2", [0.5, 0.4], None, "sum to 1"),
        ("pg_ab", [1, 1], "seed", "takes no seed"),
        ("statsig", [1, 1], None, "unknown hashing scheme"),
        ("unleash", [1, 1], "", "1 to 200 bytes"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=words) as e:
            conn.execute("SELECT ab.create_test(%s::jsonb)", (config(scheme, weights, seed),))
        assert e.value.diag.message_hint or scheme in ("statsig", "unleash") and seed == ""
    assert one(conn, "SELECT count(*) FROM ab.tests") == 0

    conn.execute("SELECT ab.create_test(%s::jsonb)", (config("posthog", [60, 40]),))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="sum to 100"):
        conn.execute("""SELECT ab.update_weights('r', '{"a": 50}')""")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="sum to 1"):
        conn.execute("SELECT ab.set_test_hashing('r', 'growthbook_v2')")
    assert one(conn, "SELECT jsonb_agg(weight ORDER BY ordinal) FROM ab.variants WHERE test_id = 'r'") == [60, 40]
    assert one(conn, "SELECT hashing FROM ab.tests WHERE test_id = 'r'") == "posthog"

    # A draft's hashing may change, with an event and an audit row; a started test's may not.
    got = one(conn, "SELECT ab.set_test_hashing('r', 'unleash', 'imported')")
    assert got == {"test_id": "r", "hashing": "unleash", "hashing_seed": "imported"}
    event = one(conn, "SELECT payload FROM ab.events WHERE type = 'hashing_changed' ORDER BY id DESC LIMIT 1")
    assert event["data"] == {"old": {"hashing": "posthog", "hashing_seed": None}, "new": {"hashing": "unleash", "hashing_seed": "imported"}}
    conn.execute("SELECT ab.start_test('r')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="fixed once it has started"):
        conn.execute("SELECT ab.set_test_hashing('r', 'pg_ab')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="set_test_hashing"):
        conn.execute("SELECT ab.set_flag_hashing('ff.ab_test_r', 'posthog')")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT ab.set_flag_hashing('ff.none', 'posthog')")
    assert one(conn, "SELECT hashing FROM ab.tests WHERE test_id = 'r'") == "unleash"
    assert one(conn, "SELECT hashing FROM ab.flags WHERE name = 'ff.ab_test_r'") == "pg_ab"
