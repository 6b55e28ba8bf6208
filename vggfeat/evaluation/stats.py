"""How a claim is judged: per-seed summaries, comparisons and one verdict vocabulary.

Every experiment of the project (the demo, the paper in miniature, the benchmark reports) states
its chance level (:mod:`vggfeat.evaluation.chance`) and judges its claims here, so that a "holds"
means the same thing everywhere. :func:`paired` compares two readings of the same nets,
:func:`welch` different nets, :func:`versus_null` a result and chance, and :func:`tost` tests "no
effect"; :func:`paired_bootstrap` measures the test-sampling noise and :func:`holm` adjusts the
p-values of a family of claims. :class:`Verdict` states the verdict rule. This is the public
module ``vggfeat.stats``: :class:`Verdict` and :func:`holm` live in
:mod:`vggfeat.evaluation.verdict`, :func:`paired_bootstrap` in :mod:`vggfeat.evaluation.bootstrap`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as st

from .bootstrap import paired_bootstrap
from .verdict import ALPHA, VERDICTS, Verdict, holm

__all__ = [
    "VERDICTS", "ALPHA", "Verdict", "per_seed", "paired", "welch", "tost", "versus_null", "holm",
    "paired_bootstrap",
]  # fmt: skip


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


# --- bootstrap over test images -------------------------------------------------------------------
