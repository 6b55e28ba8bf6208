"""Test-sampling noise: a paired bootstrap over the test images of two systems' scores, the
``boot=`` input of :func:`vggfeat.stats.paired` and :func:`vggfeat.stats.welch`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike


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
