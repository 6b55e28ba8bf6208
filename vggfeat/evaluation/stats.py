"""How a claim is judged: per-seed summaries, comparisons and one verdict vocabulary.

Every experiment of the project (the demo, the paper in miniature, the benchmark reports) states
its chance level (:mod:`vggfeat.evaluation.chance`) and judges its claims here, so that a "holds"
means the same thing everywhere. :func:`paired` compares two readings of the same nets,
:func:`welch` different nets, :func:`versus_null` a result and chance, and :func:`tost` tests "no
effect"; :func:`paired_bootstrap` measures the test-sampling noise and :func:`holm` adjusts the
p-values of a family of claims. :class:`Verdict` states the verdict rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as st

__all__ = [
    "VERDICTS", "ALPHA", "Verdict", "per_seed", "paired", "welch", "tost", "versus_null", "holm",
    "paired_bootstrap",
]  # fmt: skip

VERDICTS = ("holds", "does not hold", "equivalent", "inconclusive")
ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """A judged claim: its effect, 95% interval, p-value, the test used and the verdict.

    Parameters
    ----------
    claim : str
        The claim in words, e.g. ``"multi-scale > single Q"``.
    effect : float
        mean(a) - mean(b), in the inputs' unit (e.g. mAP points).
    ci95 : tuple of float
        (low, high), the 95% interval of ``effect``; (NaN, NaN) when no test could be run.
    p : float
        The two-sided p of "no difference"; for :func:`tost` with a margin, the TOST p. NaN
        when no test could be run (e.g. one seed and no bootstrap).
    test : str
        The test used, in words.
    verdict : str
        One of :data:`VERDICTS`.
    p_holm : float or None, default None
        The Holm-adjusted p once :func:`holm` has seen the family; None before.

    Raises
    ------
    ValueError
        If ``verdict`` is not one of :data:`VERDICTS`.

    Notes
    -----
    The verdict rule of every test here, with ``ALPHA`` = 0.05:

    - A directional claim "a > b" **holds** when its 95% interval lies above 0 (two-sided
      p < 0.05 and effect > 0) and **does not hold** when the interval lies below 0. Otherwise,
      with a margin, it is **equivalent** when the TOST p < 0.05 (the 90% interval inside
      ±margin); else it is **inconclusive**.
    - A "no effect" claim (:func:`tost`) is **equivalent** under the same TOST rule, **does not
      hold** when the 95% interval excludes 0 without being equivalent, and is **inconclusive**
      otherwise; without a margin it can never be equivalent.
    - A comparison missing a noise source (a side with one seed in :func:`welch`, or in
      :func:`tost` with ``paired=False``) is **inconclusive** whatever the numbers.

    :func:`holm` adds adjusted p-values for a family of claims; the verdicts stay those of each
    claim's own 95% interval.
    """

    claim: str
    effect: float
    ci95: tuple[float, float]
    p: float
    test: str
    verdict: str
    p_holm: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict.

        Returns
        -------
        dict
            ``{claim, effect, ci95: [lo, hi], p, p_holm, test, verdict}``, numbers as Python
            floats (``p_holm`` None before :func:`holm`).
        """
        return dict(
            claim=self.claim, effect=float(self.effect), ci95=[float(c) for c in self.ci95],
            p=float(self.p), p_holm=None if self.p_holm is None else float(self.p_holm),
            test=self.test, verdict=self.verdict,
        )  # fmt: skip


# --- per-seed summaries ---------------------------------------------------------------------------


def per_seed(values: ArrayLike) -> dict[str, Any]:
    """Mean and standard deviation of per-seed values, with the values themselves.

    Parameters
    ----------
    values : array_like
        One value per seed, any unit; flattened.

    Returns
    -------
    dict
        ``{"mean": float, "std": float, "per_seed": list of float}``; std with ddof=1, 0.0 for
        a single seed.

    Raises
    ------
    ValueError
        If ``values`` is empty.
    """
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError("per_seed needs at least one value")
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0, per_seed=v.tolist())


# --- the verdict rule -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    """An effect with its standard error and degrees of freedom (inf: normal)."""

    effect: float
    se: float
    df: float

    @classmethod
    def of(cls, effect: float, parts: Sequence[tuple[float, float]]) -> _Estimate:
        """``parts``: (variance, df) of independent noise sources; Welch-Satterthwaite df."""
        var = sum(v for v, _ in parts)
        den = sum(v * v / d for v, d in parts if v > 0)
        return cls(float(effect), math.sqrt(var), var * var / den if den > 0 else math.inf)

    def p(self, null: float = 0.0, side: str = "two") -> float:
        """p of H0: effect = ``null``; side "two", "greater" (H1 effect > null) or "less"."""
        if self.se == 0:  # no noise at all: any difference is certain
            z = math.copysign(math.inf, self.effect - null) if self.effect != null else 0.0
        else:
            z = (self.effect - null) / self.se
        if side == "greater":
            return float(st.t.sf(z, self.df))
        if side == "less":
            return float(st.t.cdf(z, self.df))
        return 1.0 if z == 0 else float(2 * st.t.sf(abs(z), self.df))

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        half = st.t.ppf(0.5 + level / 2, self.df) * self.se if self.se > 0 else 0.0
        return self.effect - half, self.effect + half

    def tost(self, margin: float) -> float:
        """TOST p: the larger of the one-sided p's of effect > -margin and effect < margin."""
        return max(self.p(-margin, "greater"), self.p(margin, "less"))


def _nan_verdict(claim: str, effect: float, test: str) -> Verdict:
    return Verdict(claim, float(effect), (math.nan, math.nan), math.nan, test, "inconclusive")


def _judge(claim, est: _Estimate, test, *, margin=None, null=False, judged=True) -> Verdict:
    """The verdict rule of :class:`Verdict` on an estimate. ``judged=False``:
    a noise source is missing, the verdict stays inconclusive whatever the numbers."""
    if margin is not None and not margin > 0:
        raise ValueError(
            f"margin must be a positive number (the largest effect that counts as none), got {margin}"
        )
    ci, p = est.ci(), est.p()
    equivalent = margin is not None and est.tost(margin) < ALPHA
    if margin is not None:
        test += f"; TOST margin ±{margin:g}"
    if null:
        p = est.tost(margin) if margin is not None else p
        verdict = "equivalent" if equivalent else "does not hold" if est.p() < ALPHA else "inconclusive"
    elif ci[0] > 0 and p < ALPHA:
        verdict = "holds"
    elif ci[1] < 0 and p < ALPHA:
        verdict = "does not hold"
    else:
        verdict = "equivalent" if equivalent else "inconclusive"
    return Verdict(claim, est.effect, ci, p, test, verdict if judged else "inconclusive")


def _values(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=float).ravel()
    if v.size == 0 or np.isnan(v).any():
        raise ValueError(f"{name} must hold one finite value per seed, got {list(v)}")
    return v


def _boot_part(boot) -> list[tuple[float, float]]:
    if boot is None:
        return []
    b = np.asarray(boot, dtype=float)
    b = b[~np.isnan(b)]  # a resample without a positive for every class has no mAP
    if b.size < 2:
        raise ValueError(f"boot needs at least 2 finite bootstrap replicates, got {b.size}")
    return [(float(b.var(ddof=1)), b.size - 1.0)]


def _paired_estimate(a, b, boot) -> tuple[_Estimate, str, bool]:
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs one a and one b per seed, got {a.size} and {b.size}")
    d, n = a - b, a.size
    parts = [(float(d.var(ddof=1)) / n, n - 1.0)] if n > 1 else []
    parts += _boot_part(boot)
    what = f"paired t over {n} seeds" if n > 1 else "1 seed"
    what += " + bootstrap over test images" if boot is not None else ""
    return _Estimate.of(d.mean(), parts), what, bool(parts)


def _welch_estimate(a, b, boot) -> tuple[_Estimate, str, bool]:
    a, b = _values(a, "a"), _values(b, "b")
    effect = a.mean() - b.mean()
    seeds = a.size > 1 and b.size > 1
    parts = [(float(x.var(ddof=1)) / x.size, x.size - 1.0) for x in (a, b)] if seeds else []
    parts += _boot_part(boot)
    if seeds:
        what = f"Welch's t, {a.size} vs {b.size} seeds"
        what += " + bootstrap over test images" if boot is not None else ""
    else:
        what = f"{a.size} vs {b.size} seeds: training noise unknown, so not judged"
        what += "; interval from the bootstrap over test images only" if boot is not None else ""
    return _Estimate.of(effect, parts), what, seeds


def paired(
    a: ArrayLike, b: ArrayLike, *, claim: str, boot: ArrayLike | None = None, margin: float | None = None
) -> Verdict:
    """Judge "a > b" for two readings of the same nets (multi-scale vs single Q, dense vs crops).

    Parameters
    ----------
    a, b : array_like, shape (n,)
        One value per seed, any unit (e.g. mAP points): ``a[i]`` and ``b[i]`` are measured on
        the nets of seed i.
    claim : str
        The claim in words, kept in the verdict.
    boot : array_like, shape (R,), optional
        Bootstrap replicates of the mean difference over the test images, in the same unit
        (:func:`paired_bootstrap`); NaN replicates are dropped.
    margin : float, optional
        The largest effect that counts as none, in the inputs' unit, stated before the run;
        allows the verdict ``equivalent``.

    Returns
    -------
    Verdict
        Effect mean(a - b), judged by the rule of :class:`Verdict`. With one seed and no
        ``boot`` there is no test: NaN interval and p, ``inconclusive``.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is empty or holds NaN, if they differ in length, if ``boot`` has fewer
        than 2 finite replicates, or if ``margin`` is not positive (checked when a test runs).

    Notes
    -----
    Paired t on the per-seed differences (t-quantiles, df = n - 1); without ``boot``, equal to
    ``scipy.stats.ttest_rel``. A measured number varies with the training seed (training noise,
    carried by the per-seed values) and with the test images drawn (test-sampling noise,
    measured by ``boot``). With ``boot`` the two variances add, and the degrees of freedom of
    the sum follow Welch-Satterthwaite (the bootstrap counting R - 1), so that a few seeds keep
    their wide t-quantiles. With one seed the bootstrap alone judges the reading of that net.
    """
    est, what, ok = _paired_estimate(a, b, boot)
    if not ok:
        return _nan_verdict(claim, est.effect, what + ": no test")
    return _judge(claim, est, what, margin=margin)


def welch(
    a: ArrayLike, b: ArrayLike, *, claim: str, boot: ArrayLike | None = None, margin: float | None = None
) -> Verdict:
    """Judge "a > b" for different nets, from per-seed values of each.

    Parameters
    ----------
    a : array_like, shape (n_a,)
        One value per seed of the first nets, any unit (e.g. mAP points).
    b : array_like, shape (n_b,)
        The same for the second nets; ``n_b`` need not equal ``n_a``.
    claim : str
        The claim in words, kept in the verdict.
    boot : array_like, shape (R,), optional
        Bootstrap replicates of the difference over the test images, as in :func:`paired`.
    margin : float, optional
        As in :func:`paired`: allows the verdict ``equivalent``.

    Returns
    -------
    Verdict
        Effect mean(a) - mean(b), judged by the rule of :class:`Verdict`.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is empty or holds NaN, if ``boot`` has fewer than 2 finite replicates,
        or if ``margin`` is not positive (checked when a test runs).

    Notes
    -----
    Welch's t (unequal variances, t-quantiles, Welch-Satterthwaite df); without ``boot``, equal
    to ``scipy.stats.ttest_ind(a, b, equal_var=False)``; ``boot`` adds its variance as in
    :func:`paired`. A side with one seed has no measured training noise, and no noise pooled
    from other nets stands in for it: the verdict is then ``inconclusive``. With ``boot`` the
    effect still gets the bootstrap's interval and p; without, they are NaN.
    """
    est, what, seeds = _welch_estimate(a, b, boot)
    if not seeds and boot is None:
        return _nan_verdict(claim, est.effect, what)
    return _judge(claim, est, what, margin=margin, judged=seeds)


def tost(
    a: ArrayLike,
    b: ArrayLike,
    *,
    margin: float | None,
    paired: bool,
    claim: str,
    boot: ArrayLike | None = None,
) -> Verdict:
    """Judge the "no effect" claim a ≈ b (e.g. "LRN does not help") by two one-sided tests.

    Parameters
    ----------
    a, b : array_like
        Per-seed values, as in :func:`paired` (``paired=True``) or :func:`welch`.
    margin : float or None
        The largest difference that counts as none, in the inputs' unit, part of the claim's
        data and fixed before the run. None: the claim can only be ``inconclusive`` or ``does
        not hold``.
    paired : bool
        True: the paired t estimate of :func:`paired`; False: Welch's t of :func:`welch`.
    claim : str
        The claim in words, kept in the verdict.
    boot : array_like, shape (R,), optional
        Bootstrap replicates of the difference over the test images, as in :func:`paired`.

    Returns
    -------
    Verdict
        Effect: the mean difference; ``ci95``: its 95% interval; ``p``: the TOST p, the larger of
        the one-sided p's of difference > -margin and difference < +margin, each equal to the
        corresponding one-sided ``scipy.stats`` test (without a margin, the two-sided p). Judged
        by the "no effect" rule of :class:`Verdict`; a Welch side with one seed leaves it
        ``inconclusive``. Without any measured noise (one seed, or a one-seed Welch side, and no
        ``boot``) there is no test: NaN interval and p, ``inconclusive``.

    Raises
    ------
    ValueError
        As :func:`paired` or :func:`welch`.
    """
    est, what, ok = (_paired_estimate if paired else _welch_estimate)(a, b, boot)
    if est.se == 0 and not ok:
        return _nan_verdict(claim, est.effect, what)
    return _judge(claim, est, what, margin=margin, null=True, judged=ok)


def versus_null(values: ArrayLike, null: ArrayLike, *, claim: str) -> Verdict:
    """Judge "values > null": per-seed results against samples of a null distribution.

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per seed, e.g. the mAP of each seed (fraction or points).
    null : array_like, shape (M,)
        Samples of the null distribution in the same unit, e.g. the permuted-score mAPs of
        :func:`vggfeat.evaluation.chance.chance_map_samples`.
    claim : str
        The claim in words, kept in the verdict.

    Returns
    -------
    Verdict
        Effect mean(values) - mean(null).

    Raises
    ------
    ValueError
        If ``values`` or ``null`` is empty or holds NaN.

    Notes
    -----
    One value v: an empirical permutation test. p = 2 min(P(null >= v), P(null <= v)), at most
    1, each counted as (1 + hits) / (1 + M); the interval is [v - q97.5, v - q2.5] of the null,
    i.e. v's noise taken to have the null's spread. The claim holds when the interval lies above
    0 and p < 0.05, does not hold when it lies below 0 and p < 0.05, and is inconclusive
    otherwise.

    Several values: Welch's t of the values against the null samples, judged by the rule of
    :class:`Verdict`. Under "no information" every seed's value is a draw of the null, so the
    test is valid; otherwise the seeds' spread carries the training noise.
    """
    v, z = _values(values, "values"), _values(null, "null")
    if v.size > 1:
        est, _, _ = _welch_estimate(v, z, None)
        return _judge(claim, est, f"Welch's t of {v.size} seeds against {z.size} null samples")
    m = z.size
    ge, le = (1 + np.sum(z >= v[0])) / (1 + m), (1 + np.sum(z <= v[0])) / (1 + m)
    p = float(min(1.0, 2 * min(ge, le)))
    lo, hi = v[0] - np.quantile(z, 0.975), v[0] - np.quantile(z, 0.025)
    verdict = "holds" if lo > 0 and p < ALPHA else "does not hold" if hi < 0 and p < ALPHA else "inconclusive"
    test = f"permutation test of 1 value against {m} null samples"
    return Verdict(claim, float(v[0] - z.mean()), (float(lo), float(hi)), p, test, verdict)


def holm(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Holm-Bonferroni adjusted p-values for a family of claims tested together.

    Parameters
    ----------
    verdicts : sequence of Verdict
        The family.

    Returns
    -------
    list of Verdict
        The same verdicts, in the same order, with ``p_holm`` filled and all else unchanged.
        Over the family's m finite p-values in ascending order p_(1) <= ... <= p_(m),
        p_holm of p_(j) is the max over i <= j of min(1, (m - i + 1) p_(i)); a NaN p gets a NaN
        p_holm.
    """
    p = np.array([v.p for v in verdicts], dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return [replace(v, p_holm=float(a)) for v, a in zip(verdicts, adjusted)]


# --- bootstrap over test images -------------------------------------------------------------------


def _per_seed_scores(scores, name: str) -> list[np.ndarray]:
    # a list or tuple holds one system per seed; an array is one system
    out = [np.asarray(s) for s in scores] if isinstance(scores, (list, tuple)) else [np.asarray(scores)]
    if not out:
        raise ValueError(f"{name} is empty; pass an array of scores or a list of them, one per seed")
    return out


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    scores_a: ArrayLike | Sequence[ArrayLike],
    scores_b: ArrayLike | Sequence[ArrayLike],
    labels: ArrayLike,
    *,
    n: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap over the test images of the difference between two systems' metrics.

    Parameters
    ----------
    metric : callable
        ``metric(scores, labels) -> float``, e.g. :func:`vggfeat.svm.map_metric`'s.
    scores_a, scores_b : array_like or list of array_like
        An array whose first axis is the N test images (e.g. (N, K) SVM scores, (N,) top-1
        misses), or a list or tuple of such arrays, one per seed, whose metric is averaged over
        the seeds. A list is always read as one array per seed.
    labels : array_like, shape (N, ...)
        The test images' labels, resampled with the scores.
    n : int, default 1000
        Number of replicates.
    seed : int, default 0
        Seed of the ``numpy.random.default_rng`` that draws the resamples.

    Returns
    -------
    numpy.ndarray, shape (n,)
        Replicates of metric(a[idx], labels[idx]) - metric(b[idx], labels[idx]), ``idx`` the
        test images drawn with replacement, the same for both systems (and every seed); in the
        metric's unit. A replicate is NaN where the metric is (e.g. a resample without
        positives). Pass them to :func:`paired` / :func:`welch` as ``boot``: they measure the
        test-sampling noise of a difference between systems scored on the same images.

    Raises
    ------
    ValueError
        If a list of scores is empty, or a score array's first axis is not len(labels).
    """
    a, b = _per_seed_scores(scores_a, "scores_a"), _per_seed_scores(scores_b, "scores_b")
    labels = np.asarray(labels)
    if any(len(s) != len(labels) for s in a + b):
        raise ValueError(f"every score array needs one row per test image ({len(labels)} labels)")
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    for r in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        ya = labels[idx]
        out[r] = np.mean([metric(s[idx], ya) for s in a]) - np.mean([metric(s[idx], ya) for s in b])
    return out
