"""How a claim is judged: per-seed summaries, comparisons and one verdict vocabulary.

Every experiment of the project (the demo, the paper in miniature, the benchmark reports) states
its chance level (:mod:`vggfeat.evaluation.chance`) and judges its claims here, so that a
"holds" means the same thing everywhere.

Noise
    A measured number varies with the training seed (training noise) and with the test images
    drawn (test-sampling noise). Per-seed values carry the first; a bootstrap over the test
    images (:func:`paired_bootstrap`) measures the second. When both are known their variances
    add, and the degrees of freedom of the sum follow Welch-Satterthwaite (the bootstrap's count
    as its number of replicates minus one), so a few seeds keep their wide t-quantiles.

Comparisons (effects are in the units of the inputs, e.g. mAP points; a claim reads "a > b")
    :func:`paired`
        two readings of the same nets (multi-scale vs single Q, dense vs multi-crop): a[i] and
        b[i] come from seed i; paired t on the per-seed differences (df = n - 1), plus the
        bootstrap's variance when given. With one seed the bootstrap alone judges the reading
        of that one net.
    :func:`welch`
        different nets: Welch's t (unequal variances, t-quantiles), plus the bootstrap's
        variance when given. A side with one seed has no measured training noise, and no noise
        pooled from other nets stands in for it: the verdict is then ``inconclusive`` (the
        bootstrap still gives the effect an interval and a p, reported as such).
    :func:`versus_null`
        observed values against samples of a null distribution (the permuted-score mAPs of
        :func:`vggfeat.evaluation.chance.chance_map_samples`): one value, an empirical
        permutation test; several, Welch's t against the null samples.
    :func:`tost`
        equivalence (two one-sided tests) within +-margin, for "no effect" and "saturates"
        claims; the margin belongs to the claim's data, stated before the run.

Verdicts (:data:`VERDICTS`)
    A directional claim "a > b" **holds** when its 95% interval lies above 0 (two-sided
    p < 0.05 and effect > 0) and **does not hold** when the interval lies below 0. With a
    margin, it is **equivalent** when the TOST p < 0.05 (the 90% interval inside +-margin).
    Otherwise it is **inconclusive**. A "no effect" claim (:func:`tost`) is **equivalent**
    under the same TOST rule, **does not hold** when the 95% interval excludes 0 without being
    equivalent, and is **inconclusive** otherwise; without a margin it can never be
    equivalent. :func:`holm` adds Holm-Bonferroni adjusted p-values for a family of claims
    tested together; the verdicts themselves stay those of each claim's own 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as st

__all__ = [
    "VERDICTS", "ALPHA", "Verdict", "per_seed", "paired", "welch", "tost", "versus_null", "holm",
    "paired_bootstrap",
]  # fmt: skip

VERDICTS = ("holds", "does not hold", "equivalent", "inconclusive")
ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """A judged claim. ``effect``: mean(a) - mean(b) in the inputs' units; ``ci95``: its 95%
    interval; ``p``: the two-sided p of "no difference" (for :func:`tost`, the TOST p);
    ``test``: the test used, in words; ``verdict``: one of :data:`VERDICTS`; ``p_holm``: the
    Holm-adjusted p once :func:`holm` has seen the family (None before). NaN where a number
    cannot be measured (e.g. one seed and no bootstrap)."""

    claim: str
    effect: float
    ci95: tuple[float, float]
    p: float
    test: str
    verdict: str
    p_holm: float | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_dict(self) -> dict:
        """``{claim, effect, ci95: [lo, hi], p, p_holm, test, verdict}`` (JSON-ready floats)."""
        return dict(
            claim=self.claim, effect=float(self.effect), ci95=[float(c) for c in self.ci95],
            p=float(self.p), p_holm=None if self.p_holm is None else float(self.p_holm),
            test=self.test, verdict=self.verdict,
        )  # fmt: skip


# --- per-seed summaries ---------------------------------------------------------------------------


def per_seed(values) -> dict:
    """``{"mean", "std", "per_seed"}`` of per-seed values (any unit); std with ddof=1, 0 for a
    single seed."""
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
    """The module's verdict rule on an estimate (see the module docstring). ``judged=False``:
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


def paired(a, b, *, claim: str, boot=None, margin: float | None = None) -> Verdict:
    """Judge "a > b" for two readings of the same nets: ``a[i]``, ``b[i]`` measured on the nets
    of seed i (any unit, e.g. mAP points). Effect mean(a - b); paired t over the seeds
    (t-quantiles, df = n - 1), equal to ``scipy.stats.ttest_rel``. ``boot``: replicates of the
    mean difference from :func:`paired_bootstrap` (same unit); their variance adds the
    test-sampling noise. ``margin``: allows the verdict ``equivalent``."""
    est, what, ok = _paired_estimate(a, b, boot)
    if not ok:
        return _nan_verdict(claim, est.effect, what + ": no test")
    return _judge(claim, est, what, margin=margin)


def welch(a, b, *, claim: str, boot=None, margin: float | None = None) -> Verdict:
    """Judge "a > b" for different nets: per-seed values ``a`` and ``b`` (any unit, any counts).
    Effect mean(a) - mean(b); Welch's t (t-quantiles, Welch-Satterthwaite df), equal to
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``; ``boot`` as in :func:`paired`. A side
    with one seed leaves the training noise unknown: ``inconclusive``."""
    est, what, seeds = _welch_estimate(a, b, boot)
    if not seeds and boot is None:
        return _nan_verdict(claim, est.effect, what)
    return _judge(claim, est, what, margin=margin, judged=seeds)


def tost(a, b, *, margin: float | None, paired: bool, claim: str, boot=None) -> Verdict:
    """Judge the "no effect" claim a ≈ b (e.g. "LRN does not help"): two one-sided tests of
    mean difference > -margin and < +margin on the paired t (``paired=True``) or Welch's t
    estimate, each equal to the corresponding one-sided ``scipy.stats`` test; p is the TOST p
    (the larger of the two). ``margin`` is in the inputs' unit, fixed before the run; None: the
    claim can only be ``inconclusive`` or ``does not hold``. ``ci95`` is the 95% interval of
    the difference."""
    est, what, ok = (_paired_estimate if paired else _welch_estimate)(a, b, boot)
    if est.se == 0 and not ok:
        return _nan_verdict(claim, est.effect, what)
    return _judge(claim, est, what, margin=margin, null=True, judged=ok)


def versus_null(values, null, *, claim: str) -> Verdict:
    """Judge "values > null": per-seed values (e.g. the mAP of each seed, fraction or points)
    against samples of a null distribution in the same unit (e.g.
    :func:`vggfeat.evaluation.chance.chance_map_samples`).
    Effect mean(values) - mean(null).

    - One value v: an empirical permutation test. p = 2 min(P(null >= v), P(null <= v)), each
      counted as (1 + hits) / (1 + M) over the M samples; the interval is [v - q97.5, v - q2.5]
      of the null, i.e. v's noise taken to have the null's spread.
    - Several: Welch's t of the values against the null samples. Under "no information" every
      seed's value is a draw of the null, so the test is valid; otherwise the seeds' spread
      carries the training noise.
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
    """The same verdicts with ``p_holm`` filled: Holm-Bonferroni over the family's m finite
    p-values (ascending p_(j): max over i <= j of min(1, (m - i + 1) p_(i))); NaN p stays NaN."""
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
    metric: Callable, scores_a, scores_b, labels, *, n: int = 1000, seed: int = 0
) -> np.ndarray:
    """(n,) replicates of metric(a[idx], labels[idx]) - metric(b[idx], labels[idx]), ``idx`` the
    test images resampled with replacement, the same for both systems: the test-sampling noise
    of a difference between two systems scored on the same images (pass the replicates to
    :func:`paired` / :func:`welch` as ``boot``). ``scores_a`` / ``scores_b``: an array whose
    first axis is the N test images (e.g. (N, K) scores, (N,) top-1 misses), or a list of such
    arrays, one per seed, whose metric is averaged over the seeds; ``labels``: (N, ...). The unit
    is the metric's; a replicate is NaN when the metric is (a resample without positives)."""
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
