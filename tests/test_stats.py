"""vggfeat.stats on scripted numbers: the t-tests and TOST against scipy.stats, Holm against a
hand-computed example, the chance levels against hand and naive computations, the bootstrap's
coverage on simulated data, and every branch of the verdict rule."""

import itertools
import json
import math

import numpy as np
import pytest
from conftest import naive_voc07_ap
from scipy import stats as st

from vggfeat.evaluation import chance, stats, svm

A = [61.0, 63.5, 60.2, 62.8, 61.9]
B = [58.3, 59.9, 59.1, 57.2, 60.4]


# --- comparisons against scipy --------------------------------------------------------------------


def test_welch_equals_scipy_ttest_ind():
    v = stats.welch(A, B[:3], claim="a > b")
    ref = st.ttest_ind(A, B[:3], equal_var=False)
    assert v.effect == pytest.approx(np.mean(A) - np.mean(B[:3]))
    assert v.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert v.ci95 == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-10)
    assert "Welch" in v.test


def test_paired_equals_scipy_ttest_rel():
    v = stats.paired(A, B, claim="a > b")
    ref = st.ttest_rel(A, B)
    assert v.effect == pytest.approx(np.mean(np.subtract(A, B)))
    assert v.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert v.ci95 == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-10)


def test_paired_ignores_what_welch_counts_as_noise():
    # the example: per-seed differences -5.5, -5.8, -5.6 are reliably negative (paired
    # p ~ 3e-4) although each side's spread over seeds is large
    a, b = [37.8, 43.1, 32.5], [43.3, 48.9, 38.1]
    assert stats.paired(a, b, claim="multi > single").verdict == "does not hold"
    assert stats.paired(a, b, claim="multi > single").p == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert stats.welch(a, b, claim="multi > single").verdict == "inconclusive"


@pytest.mark.parametrize("paired", [True, False])
def test_tost_equals_two_one_sided_scipy_tests(paired):
    a, b, margin = [29.9, 30.4, 29.5, 30.1], [29.7, 30.0, 29.9, 29.6], 1.0
    v = stats.tost(a, b, margin=margin, paired=paired, claim="no effect")
    if paired:
        d = np.subtract(a, b)
        lower = st.ttest_1samp(d, -margin, alternative="greater").pvalue
        upper = st.ttest_1samp(d, margin, alternative="less").pvalue
        ci = st.ttest_rel(a, b).confidence_interval(0.95)
    else:
        lower = st.ttest_ind(np.add(a, margin), b, equal_var=False, alternative="greater").pvalue
        upper = st.ttest_ind(np.subtract(a, margin), b, equal_var=False, alternative="less").pvalue
        ci = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert v.p == pytest.approx(max(lower, upper), rel=1e-10)
    assert v.ci95 == pytest.approx(tuple(ci), rel=1e-10)
    assert v.verdict == "equivalent" and "TOST margin ±1" in v.test


def test_bootstrap_variance_adds_to_the_seed_variance():
    boot = np.random.default_rng(0).normal(0, 0.5, 4000)
    v = stats.paired(A, B, claim="a > b", boot=boot)
    d = np.subtract(A, B)
    seed_var, boot_var = d.var(ddof=1) / 5, boot.var(ddof=1)
    se = math.sqrt(seed_var + boot_var)
    df = (seed_var + boot_var) ** 2 / (seed_var**2 / 4 + boot_var**2 / 3999)  # Welch-Satterthwaite
    half = st.t.ppf(0.975, df) * se
    assert v.ci95 == pytest.approx((d.mean() - half, d.mean() + half))
    assert v.p == pytest.approx(2 * st.t.sf(d.mean() / se, df))
    one = stats.paired([70.0], [68.0], claim="one seed", boot=boot)  # the bootstrap alone
    h = st.t.ppf(0.975, 3999) * boot.std(ddof=1)
    assert one.ci95 == pytest.approx((2 - h, 2 + h)) and one.effect == 2.0
    assert one.verdict == "holds"


# --- Holm -----------------------------------------------------------------------------------------


def test_holm_equals_a_hand_computed_example():
    ps = [0.01, 0.04, 0.03, 0.005, math.nan]
    vs = [stats.Verdict(f"c{i}", 1.0, (0.0, 2.0), p, "t", "inconclusive") for i, p in enumerate(ps)]
    # m = 4 finite p: sorted 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005 = 0.02, 3 * 0.01 = 0.03,
    # 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    got = [v.p_holm for v in stats.holm(vs)]
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])
    assert [v.p for v in stats.holm(vs)][:4] == ps[:4] and vs[0].p_holm is None  # a copy
    assert stats.holm([stats.Verdict("x", 1.0, (0, 1), 0.6, "t", "inconclusive")] * 3)[0].p_holm == 1.0


# --- chance levels --------------------------------------------------------------------------------


def test_chance_topk_by_hand():
    assert chance.chance_topk(1000, 1) == pytest.approx(0.999)
    assert chance.chance_topk(1000, 5) == pytest.approx(0.995)
    assert chance.chance_topk(24) == pytest.approx(23 / 24)
    assert chance.chance_topk(3, 5) == 0.0  # top-5 of 3 classes always holds the label
    with pytest.raises(ValueError, match="num_classes"):
        chance.chance_topk(0)


def test_chance_ap_equals_the_exact_expectation_over_every_ranking():
    # 5 images (2 positives, 1 difficult, 2 negatives): every one of the 120 rankings is equally
    # likely at chance; the mean of the permutation samples converges on their mean AP
    labels = np.array([1, -1, 0, 1, -1])
    exact = np.mean([naive_voc07_ap(np.array(p, float), labels) for p in itertools.permutations(range(5))])
    samples = chance.chance_ap_samples(labels[:, None], permutations=4000, seed=0)[:, 0]
    assert samples.mean() == pytest.approx(exact, abs=3 * samples.std() / math.sqrt(4000))
    # the positive rate among non-difficult images (2 / 4) only approximates it
    count, rate = chance.positives(labels[:, None])
    assert count.tolist() == [2] and rate.tolist() == [0.5] and exact > 0.5


def test_chance_map_matches_random_scores_scored_naively():
    rng = np.random.default_rng(1)
    labels = rng.choice([1, -1, -1, -1, 0], size=(60, 4))
    samples = chance.chance_map_samples(labels, permutations=300, seed=0)
    mean, std = chance.chance_map(labels, permutations=300, seed=0)
    assert (mean, std) == pytest.approx((samples.mean(), samples.std(ddof=1)))
    naive = [np.mean([naive_voc07_ap(rng.random(60), labels[:, k]) for k in range(4)]) for _ in range(300)]
    assert abs(mean - np.mean(naive)) < 3 * np.std(naive) / np.sqrt(300) + 1e-3
    assert std == pytest.approx(np.std(naive), rel=0.25)


def test_chance_map_skips_classes_without_positives_and_counts_positives():
    labels = np.array([[1, -1, 1], [-1, -1, 0], [-1, 0, 1], [1, -1, -1]])
    aps = chance.chance_ap_samples(labels, permutations=50, seed=3)
    assert np.isnan(aps[:, 1]).all()
    np.testing.assert_allclose(
        chance.chance_map_samples(labels, permutations=50, seed=3), aps[:, [0, 2]].mean(1)
    )
    count, rate = chance.positives(labels)
    assert count.tolist() == [2, 0, 2] and rate.tolist() == [0.5, 0.0, 2 / 3]


def test_ap_chance_gathers_the_chance_levels_of_a_test_split():
    labels = np.array([[1, -1], [0, 1], [-1, -1], [1, 0], [-1, -1]])
    got = chance.ap_chance(labels, classes=["cat", "dog"], ap="voc12", permutations=30, seed=2)
    assert got["positives"] == {"cat": 2, "dog": 1}  # by hand
    assert got["positive_rate"] == {"cat": 0.5, "dog": 0.25}  # 2 of 4, 1 of 4 non-difficult
    aps = chance.chance_ap_samples(labels, permutations=30, seed=2, ap="voc12")
    assert got["ap"] == pytest.approx(dict(zip(["cat", "dog"], aps.mean(axis=0))))
    maps = chance.chance_map_samples(labels, permutations=30, seed=2, ap="voc12")
    assert (got["map"], got["map_std"]) == pytest.approx((maps.mean(), maps.std(ddof=1)))
    assert got["ap_rule"] == "voc12" and got["permutations"] == 30


def test_chance_mean_class_recall_by_hand():
    assert chance.chance_mean_class_recall(102) == pytest.approx(1 / 102)
    with pytest.raises(ValueError, match="num_classes"):
        chance.chance_mean_class_recall(0)


def test_per_seed():
    assert stats.per_seed([1.0, 2.0, 4.0]) == {"mean": 7 / 3, "std": pytest.approx(np.std([1, 2, 4], ddof=1)),
                                               "per_seed": [1.0, 2.0, 4.0]}  # fmt: skip
    assert stats.per_seed([0.5]) == {"mean": 0.5, "std": 0.0, "per_seed": [0.5]}


# --- the bootstrap --------------------------------------------------------------------------------


def test_paired_bootstrap_covers_the_true_difference_at_its_nominal_rate():
    """200 simulated test sets of 300 images: system a is right on an image when u < 0.70, system
    b when u' < 0.64, where u' is the same uniform u for 80% of the images (correlated mistakes)
    and a fresh one otherwise, so the true difference is 6 points. The 95% interval from one test
    set's bootstrap covers it in 92-98% of the test sets."""
    rng = np.random.default_rng(0)
    accuracy = lambda right, _: 100 * right.mean()
    covered = 0
    for _ in range(200):
        u = rng.random(300)
        u2 = np.where(rng.random(300) < 0.8, u, rng.random(300))
        a, b = u < 0.70, u2 < 0.64
        boot = stats.paired_bootstrap(accuracy, a, b, np.zeros(300), n=400, seed=int(rng.integers(1 << 31)))
        v = stats.paired([accuracy(a, None)], [accuracy(b, None)], claim="a > b", boot=boot)
        covered += v.ci95[0] <= 6.0 <= v.ci95[1]
    assert 0.92 <= covered / 200 <= 0.98


def test_map_metric_is_the_mean_of_naive_aps_over_classes_with_positives():
    rng = np.random.default_rng(4)
    labels = rng.choice([1, -1, -1, 0], size=(40, 3))
    labels[:, 2] = -1  # no positive: skipped
    scores = rng.random((40, 3))
    want = np.mean([naive_voc07_ap(scores[:, k], labels[:, k]) for k in range(2)])
    assert svm.map_metric("voc07")(scores, labels) == pytest.approx(want)


def test_paired_bootstrap_resamples_the_same_images_for_both_systems():
    a, b = np.arange(10.0), np.arange(10.0) + 2
    boot = stats.paired_bootstrap(lambda s, y: s.mean(), a, b, np.zeros(10), n=50)
    np.testing.assert_allclose(boot, -2.0)  # identical images: only the constant gap remains
    # a list of per-seed arrays: the metric averaged over the seeds
    two = stats.paired_bootstrap(lambda s, y: s.mean(), [a, a + 4], b, np.zeros(10), n=20)
    np.testing.assert_allclose(two, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="one row per test image"):
        stats.paired_bootstrap(lambda s, y: s.mean(), a, b[:5], np.zeros(10))


# --- every branch of the verdict rule ------------------------------------------------------------


@pytest.mark.parametrize(
    "how, a, b, kw, want",
    [
        ("paired", A, B, {}, "holds"),
        ("paired", B, A, {}, "does not hold"),
        ("paired", [1.0, 2.0, 3.0], [1.5, 1.0, 3.2], {}, "inconclusive"),
        ("paired", [10.0, 10.2, 10.1, 9.9], [10.1, 10.0, 10.0, 10.05], dict(margin=0.5), "equivalent"),
        ("paired", [10.0, 10.2, 10.1, 9.9], [10.1, 10.0, 10.0, 10.05], dict(margin=0.01), "inconclusive"),
        ("welch", A, B, {}, "holds"),
        ("welch", B, A, {}, "does not hold"),
        ("welch", [1.0, 4.0, 2.0], [2.0, 1.0, 3.0], {}, "inconclusive"),
        ("welch", A, [70.0], {}, "inconclusive"),  # one seed: training noise unknown
        ("tost", [29.9, 30.4, 29.5, 30.1], [29.7, 30.0, 29.9, 29.6], dict(margin=1.0), "equivalent"),
        ("tost", [29.9, 30.4, 29.5, 30.1], [29.7, 30.0, 29.9, 29.6], dict(margin=None), "inconclusive"),
        ("tost", A, B, dict(margin=None), "does not hold"),  # a clear effect: no "no effect"
        ("tost", A, B, dict(margin=10.0), "equivalent"),  # ... yet within a wide margin
        ("tost", [1.0, 4.0, 2.0], [2.0, 1.0, 3.0], dict(margin=0.5), "inconclusive"),
    ],
)
def test_each_verdict_branch(how, a, b, kw, want):
    if how == "tost":
        v = stats.tost(a, b, paired=False, claim="c", **kw)
    else:
        v = getattr(stats, how)(a, b, claim="c", **kw)
    assert v.verdict == want
    if want in ("holds", "does not hold") and how != "tost":
        assert v.p < 0.05 and (v.ci95[0] > 0 if want == "holds" else v.ci95[1] < 0)


def test_no_noise_measured_gives_no_test():
    v = stats.paired([60.0], [55.0], claim="one seed, no bootstrap")
    assert v.verdict == "inconclusive" and math.isnan(v.p) and v.effect == 5.0
    w = stats.welch([60.0, 61.0], [55.0], claim="c", boot=np.random.default_rng(0).normal(0, 0.1, 500))
    assert w.verdict == "inconclusive" and w.ci95[0] > 0 and "training noise unknown" in w.test
    with pytest.raises(ValueError, match="one a and one b per seed"):
        stats.paired([1.0, 2.0], [1.0], claim="c")
    with pytest.raises(ValueError, match="margin must be a positive number"):
        stats.tost(A, B, margin=0.0, paired=True, claim="c")


def test_versus_null_one_value_is_a_permutation_test():
    null = np.linspace(0.2, 0.3, 101)  # 101 equally spaced samples
    v = stats.versus_null([0.35], null, claim="random > chance")
    assert v.verdict == "holds" and v.p == pytest.approx(2 / 102)  # (1 + 0 hits) / (1 + 101), twice
    assert v.effect == pytest.approx(0.1) and v.ci95 == pytest.approx(
        (0.35 - np.quantile(null, 0.975), 0.35 - np.quantile(null, 0.025))
    )
    assert stats.versus_null([0.26], null, claim="c").verdict == "inconclusive"
    assert stats.versus_null([0.1], null, claim="c").verdict == "does not hold"


def test_versus_null_several_values_is_welch_against_the_null_samples():
    null = np.random.default_rng(0).normal(0.25, 0.01, 200)
    values = [0.31, 0.29, 0.33]
    v = stats.versus_null(values, null, claim="c")
    ref = st.ttest_ind(values, null, equal_var=False)
    assert v.p == pytest.approx(ref.pvalue) and v.verdict == "holds"
    assert v.ci95 == pytest.approx(tuple(ref.confidence_interval(0.95)))


def test_verdict_as_dict_is_json_ready():
    v = stats.holm([stats.paired(A, B, claim="a > b")])[0]
    d = json.loads(json.dumps(v.as_dict()))
    assert set(d) == {"claim", "effect", "ci95", "p", "p_holm", "test", "verdict"}
    assert d["ci95"] == list(v.ci95) and d["p_holm"] == v.p
    with pytest.raises(ValueError, match="verdict must be one of"):
        stats.Verdict("c", 0.0, (0, 0), 1.0, "t", "within the noise")


def test_paired_bootstrap_std_matches_the_analytic_standard_error():
    rng = np.random.default_rng(0)
    a, b = rng.random(2000) < 0.4, rng.random(2000) < 0.3
    d = a.astype(float) - b
    boot = stats.paired_bootstrap(lambda w, _: 100 * w.mean(), a, b, np.zeros(2000), n=2000)
    assert boot.std(ddof=1) == pytest.approx(100 * d.std() / np.sqrt(len(d)), rel=0.1)
