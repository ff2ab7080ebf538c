"""Each verdict rule of ab.evaluate fires on a case built for it, and every figure behind the
verdict is checked against an independent source: SciPy (Welch, chi-square), statsmodels
(two-proportion z-test, Wald interval, Holm, NormalIndPower) and GrowthBook's own engine, gbstats
(the always-valid interval). The expected verdict is derived here from those figures by the
README's rules, so a wrong statistic or a wrong rule both fail."""
import math

import numpy as np
import pytest
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from conftest import make_test, one

CHAMPION, CHALLENGER = "baseline_rule_based", "llm_v2"
ALPHA, TUNING, MIN_SAMPLES, MDE, POWER, SRM_P = 0.05, 5000, 100, 0.05, 0.8, 0.001
# (metric, direction): +1 higher is better, -1 lower is better, 0 neutral.
METRICS = [("success_rate", 1), ("error_rate", -1), ("latency_ms", -1), ("average_confidence", 1),
           ("entities_processed", 0), ("deduplication_rate", 0)]


def insert(conn, test_id, variant, latency, success):
    conn.execute(
        """INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, entities_processed, average_confidence,
                                   deduplication_rate, extraction_success)
           SELECT %s, %s, 'extraction', l, 5, 0.8, 0.1, s FROM unnest(%s::float8[], %s::bool[]) AS u(l, s)""",
        (test_id, variant, [float(x) for x in latency], [bool(x) for x in success]))


def sequential(a, b, proportion):
    """gbstats' always-valid interval of b − a (absolute difference)."""
    if proportion:
        sa, sb = ProportionStatistic(n=len(a), sum=float(np.sum(a))), ProportionStatistic(n=len(b), sum=float(np.sum(b)))
    else:
        sa = SampleMeanStatistic(n=len(a), sum=float(np.sum(a)), sum_squares=float(np.sum(np.square(a))))
        sb = SampleMeanStatistic(n=len(b), sum=float(np.sum(b)), sum_squares=float(np.sum(np.square(b))))
    t = SequentialTwoSidedTTest(sa, sb, SequentialConfig(alpha=ALPHA, sequential_tuning_parameter=TUNING,
                                                         difference_type="absolute"))
    return t.confidence_interval


def expected(champion, challenger):
    """The verdict and figures by the README's rules, from SciPy, statsmodels and gbstats."""
    (la, sa), (lb, sb) = champion, challenger
    na, nb = len(la), len(lb)
    figures = {}
    # Proportions: successes and (here) no errors.
    for name, xa, xb in [("success_rate", sa.sum(), sb.sum()), ("error_rate", 0, 0)]:
        if (xa + xb) in (0, na + nb):
            p = 1.0  # both rates 0 or both 1: no evidence
        else:
            p = proportions_ztest([xb, xa], [nb, na])[1]
        ya, yb = np.r_[np.ones(int(xa)), np.zeros(na - int(xa))], np.r_[np.ones(int(xb)), np.zeros(nb - int(xb))]
        figures[name] = {"p": p, "difference": xb / nb - xa / na, "control": xa / na,
                         "ci": list(confint_proportions_2indep(xb, nb, xa, na, method="wald")),
                         "seq": sequential(ya, yb, True)}
    samples = {"latency_ms": (la, lb), "average_confidence": (np.full(na, 0.8), np.full(nb, 0.8)),
               "entities_processed": (np.full(na, 5.0), np.full(nb, 5.0)),
               "deduplication_rate": (np.full(na, 0.1), np.full(nb, 0.1))}
    for name, (a, b) in samples.items():
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            # Two constants: their difference is exact (numpy's mean of 1,000 × 0.8 is not 0.8).
            d = b[0] - a[0]
            figures[name] = {"p": 1.0 if d == 0 else 0.0, "difference": d, "control": a[0], "ci": [d, d], "seq": [d, d]}
            continue
        d = b.mean() - a.mean()
        r = stats.ttest_ind(b, a, equal_var=False)
        ci = r.confidence_interval(1 - ALPHA)
        figures[name] = {"p": r.pvalue, "difference": d, "control": a.mean(), "ci": [ci.low, ci.high], "seq": sequential(a, b, False)}
    holm = multipletests([figures[m]["p"] for m, _ in METRICS], method="holm")[1]
    better, worse = [], []
    for (m, direction), p_adj in zip(METRICS, holm):
        f = figures[m]
        f["p_adj"] = p_adj
        moved = p_adj < ALPHA and (f["seq"][0] > 0 or f["seq"][1] < 0)
        if moved and direction:
            (better if (f["difference"] > 0) == (direction > 0) else worse).append(m)
    rate = sa.sum() / na
    required = None
    if 0 < rate < 1:
        effect = MDE * rate / math.sqrt(rate * (1 - rate))
        required = math.ceil(NormalIndPower().solve_power(effect_size=effect, alpha=ALPHA, power=POWER, ratio=1.0,
                                                           alternative="two-sided"))
    srm_p = stats.chisquare([na, nb]).pvalue
    smaller = min(na, nb)
    if srm_p < SRM_P:
        verdict = ("not_enough_data", "sample ratio mismatch")
    elif smaller < MIN_SAMPLES:
        verdict = ("not_enough_data", "min_samples")
    elif worse:
        verdict = ("worse", "worse on")
    elif "success_rate" in better or (better and required is not None and smaller >= required):
        verdict = ("better", "better on")
    elif required is None or smaller >= required:
        verdict = ("no_detectable_difference", "no metric moved")
    else:
        verdict = ("not_enough_data", "needed to detect")
    return verdict, figures, required, srm_p


rng = np.random.default_rng(21)
SAME = rng.uniform(0.6, 1.0, 800)
CASES = {
    # A challenger 50 % slower: latency moved the wrong way.
    "worse": ((rng.uniform(0.6, 1.0, 500), np.ones(500, bool)), (rng.uniform(1.0, 1.4, 500), np.ones(500, bool))),
    # Success rate 80 % → 95 %.
    "better": ((SAME[:700], np.arange(700) % 5 != 0), (SAME[:700], np.arange(700) % 20 != 0)),
    # Equal arms, 800 each: more than the ~700 the power analysis asks for at 90 % success.
    "no_detectable_difference": ((SAME, np.arange(800) % 10 != 0), (SAME, np.arange(800) % 10 != 0)),
    "not_enough_data/min_samples": ((SAME[:60], np.ones(60, bool)), (SAME[:60], np.ones(60, bool))),
    "not_enough_data/power": ((SAME[:300], np.arange(300) % 10 != 0), (SAME[:300], np.arange(300) % 10 != 0)),
    # 1000 against 1300 at equal weights.
    "not_enough_data/srm": ((rng.uniform(0.6, 1.0, 1000), np.ones(1000, bool)),
                            (rng.uniform(0.6, 1.0, 1300), np.ones(1300, bool))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_verdict_rule_fires_and_its_figures_match_independent_sources(connect, case):
    conn = connect()
    make_test(conn, "v", stages=(100,))
    champion, challenger = CASES[case]
    insert(conn, "v", CHAMPION, *champion)
    insert(conn, "v", CHALLENGER, *challenger)
    (verdict, reason), figures, required, srm_p = expected(champion, challenger)
    assert verdict == case.split("/")[0], (case, verdict, reason)  # the case is built for its rule

    e = one(conn, "SELECT ab.evaluate('v')")
    (c,) = e["comparisons"]
    assert c["verdict"] == verdict, (case, c["reason"])
    assert reason in c["reason"], (case, c["reason"])
    assert e["srm"]["p_value"] == pytest.approx(srm_p, rel=1e-6)
    assert e["srm"]["chi_square"] == pytest.approx(stats.chisquare([len(champion[0]), len(challenger[0])]).statistic, rel=1e-9)
    per_variant = c["required_sample_size"]["per_variant"]
    assert per_variant == required
    for m in c["metrics"]:
        f = figures[m["metric"]]
        what = (case, m["metric"])
        assert m["p_value"] == pytest.approx(f["p"], rel=1e-6, abs=1e-300), what
        assert m["p_value_adjusted"] == pytest.approx(f["p_adj"], rel=1e-6, abs=1e-300), what
        assert m["difference"] == pytest.approx(f["difference"], rel=1e-9, abs=1e-12), what
        assert m["ci"] == pytest.approx(f["ci"], rel=1e-6, abs=1e-12), what
        assert m["sequential_ci"] == pytest.approx(f["seq"], rel=1e-6, abs=1e-12), what
        if f["control"]:
            assert m["relative_difference"] == pytest.approx(f["difference"] / f["control"], rel=1e-9, abs=1e-12), what
            assert m["relative_ci"] == pytest.approx([x / abs(f["control"]) for x in f["ci"]], rel=1e-6, abs=1e-12), what
