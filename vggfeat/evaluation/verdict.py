"""One verdict vocabulary for every claim of the project: :class:`Verdict` and its rule, and
Holm's adjustment of a family of claims (:func:`holm`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

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
