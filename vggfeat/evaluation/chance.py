"""Chance levels: what a system without information scores, for each metric the project reports.

Top-k error and mean class recall have closed forms; the AP and mAP of a VOC-style test split are
measured over random rankings of its images, which give the level and its spread: the null
distribution that :func:`vggfeat.stats.versus_null` judges a result against.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "chance_topk", "chance_mean_class_recall", "chance_ap_samples", "chance_map_samples",
    "chance_map", "positives", "ap_chance",
]  # fmt: skip


def chance_topk(num_classes: int, k: int = 1) -> float:
    """Top-k error of a classifier that ranks the classes at random.

    Parameters
    ----------
    num_classes : int
        K, the number of classes.
    k : int, default 1
        How many top-ranked classes count as a hit.

    Returns
    -------
    float
        The error as a fraction, ``1 - min(k, K) / K`` (ILSVRC, K = 1000: 0.999 top-1, 0.995 top-5).

    Raises
    ------
    ValueError
        If ``num_classes`` or ``k`` is below 1.
    """
    if num_classes < 1 or k < 1:
        raise ValueError(f"chance_topk needs num_classes >= 1 and k >= 1, got {num_classes} and {k}")
    return 1.0 - min(k, num_classes) / num_classes


def chance_errors(num_classes: int) -> dict[str, float]:
    """Top-1 and top-5 error of a random ranking of the classes, whatever the class balance.

    Parameters
    ----------
    num_classes : int
        K, the number of classes.

    Returns
    -------
    dict of str to float
        ``{"top1", "top5"}``, fractions from :func:`chance_topk` (ILSVRC: 0.999 / 0.995).

    Raises
    ------
    ValueError
        If ``num_classes`` is below 1.
    """
    return {"top1": chance_topk(num_classes, 1), "top5": chance_topk(num_classes, 5)}


def chance_mean_class_recall(num_classes: int) -> float:
    """Mean class recall of a classifier that guesses a class at random, or always the same one.

    Parameters
    ----------
    num_classes : int
        K, the number of classes.

    Returns
    -------
    float
        ``1 / K`` as a fraction (Caltech-101 with background, K = 102: 0.0098).

    Raises
    ------
    ValueError
        If ``num_classes`` is below 1.
    """
    if num_classes < 1:
        raise ValueError(f"chance_mean_class_recall needs num_classes >= 1, got {num_classes}")
    return 1.0 / num_classes


def chance_ap_samples(
    labels: ArrayLike,
    *,
    permutations: int,
    seed: int = 0,
    ap: str | Callable[[ArrayLike, ArrayLike], float] = "voc07",
) -> np.ndarray:
    """Per-class AP of test scores that carry no information, one row per random ranking.

    Parameters
    ----------
    labels : array_like, shape (N, K)
        VOC-style labels of the N test images for K classes: 1 present, -1 absent, 0 difficult
        (ignored).
    permutations : int
        How many random rankings to draw. Each ranks the images of each class in its own random
        order, without ties.
    seed : int, default 0
        Seed of the ``numpy.random.default_rng`` that draws the rankings.
    ap : {"voc07", "voc12"} or callable, default "voc07"
        The AP rule: "voc07" (11-point), "voc12" (area under the envelope), or a function
        ``ap(scores (N,), labels (N,)) -> float`` such as :func:`vggfeat.svm.voc07_ap`.

    Returns
    -------
    numpy.ndarray, shape (permutations, K)
        AP as a fraction; NaN in every row for a class without a positive image.

    Raises
    ------
    KeyError
        If ``ap`` is a name other than "voc07" or "voc12".
    ValueError
        If ``labels`` is not 2-D or ``permutations`` is below 1; with a built-in ``ap`` rule, also
        if ``labels`` holds a value outside {1, -1, 0}.
    """
    # deferred: metrics imports scikit-learn, which the closed-form chance levels above do not need
    from .metrics import AP_FUNCTIONS, average_precisions

    ap_fn = AP_FUNCTIONS[ap] if isinstance(ap, str) else ap
    labels = np.asarray(labels)
    if labels.ndim != 2 or permutations < 1:
        raise ValueError(f"labels must be (N, K) and permutations >= 1, got {labels.shape}, {permutations}")
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(len(labels), dtype=float)[:, None], labels.shape[1])
    return np.stack([average_precisions(rng.permuted(base, axis=0), labels, ap_fn, warn=False)
                     for _ in range(permutations)])  # fmt: skip


def chance_map_samples(
    labels: ArrayLike,
    *,
    permutations: int,
    seed: int = 0,
    ap: str | Callable[[ArrayLike, ArrayLike], float] = "voc07",
) -> np.ndarray:
    """mAP of random rankings: the null distribution of a descriptor without information.

    Parameters
    ----------
    labels, permutations, seed, ap
        As in :func:`chance_ap_samples`.

    Returns
    -------
    numpy.ndarray, shape (permutations,)
        Per ranking, the mean over the classes with a positive image (as :func:`vggfeat.svm.mean_ap`)
        of the AP of :func:`chance_ap_samples`, a fraction; all NaN if no class has a positive.

    Raises
    ------
    KeyError, ValueError
        As :func:`chance_ap_samples`.
    """
    return _class_mean(chance_ap_samples(labels, permutations=permutations, seed=seed, ap=ap))


def _class_mean(aps: np.ndarray) -> np.ndarray:
    # the mean over the classes with positives (as svm.mean_ap), per permutation
    ok = ~np.isnan(aps).all(axis=0)
    return aps[:, ok].mean(axis=1) if ok.any() else np.full(len(aps), np.nan)


def chance_map(
    labels: ArrayLike,
    *,
    permutations: int,
    seed: int = 0,
    ap: str | Callable[[ArrayLike, ArrayLike], float] = "voc07",
) -> tuple[float, float]:
    """The chance mAP of a test split, with its spread over random rankings.

    Parameters
    ----------
    labels, permutations, seed, ap
        As in :func:`chance_ap_samples`.

    Returns
    -------
    mean : float
        Mean of :func:`chance_map_samples`, a fraction.
    std : float
        Its standard deviation (ddof=1; 0.0 for a single permutation).

    Raises
    ------
    KeyError, ValueError
        As :func:`chance_ap_samples`.
    """
    m = chance_map_samples(labels, permutations=permutations, seed=seed, ap=ap)
    return float(m.mean()), float(m.std(ddof=1)) if m.size > 1 else 0.0


def positives(labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the number of positive images and their rate among the non-difficult ones.

    Parameters
    ----------
    labels : array_like, shape (N, K)
        VOC-style labels: 1 present, -1 absent, 0 difficult.

    Returns
    -------
    count : numpy.ndarray of int, shape (K,)
        Images labelled 1.
    rate : numpy.ndarray of float, shape (K,)
        ``count`` over the images whose label is not 0, a fraction; NaN for a class whose labels
        are all 0. This is the approximate AP of a random ranking; the exact one, with the
        11-point rule's interpolation, comes from :func:`chance_ap_samples`.
    """
    labels = np.asarray(labels)
    pos, counted = (labels > 0).sum(axis=0), (labels != 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pos, np.where(counted > 0, pos / np.maximum(counted, 1), np.nan)


def ap_chance(
    labels: ArrayLike,
    *,
    classes: Sequence[str],
    ap: str | Callable[[ArrayLike, ArrayLike], float],
    permutations: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The chance level of a VOC-style test split, per class and as mAP, ready for a report.

    Parameters
    ----------
    labels : array_like, shape (N, K)
        VOC-style labels: 1 present, -1 absent, 0 difficult (ignored).
    classes : sequence of str
        The K class names, in column order; they key the per-class dicts (``zip``: extra names
        or columns are dropped).
    ap : {"voc07", "voc12"} or callable
        The AP rule, as in :func:`chance_ap_samples`.
    permutations : int
        How many random rankings to draw.
    seed : int, default 0
        Seed of the rankings.

    Returns
    -------
    dict
        ``permutations``; ``ap_rule`` (``ap``, or the function's ``__name__``); ``map`` and
        ``map_std``, the mean and std (ddof=1; 0.0 for one permutation) of
        :func:`chance_map_samples`; and dicts keyed by ``classes``: ``positives`` and
        ``positive_rate`` (:func:`positives`) and ``ap``, the mean AP over the rankings (NaN
        for a class without positives). Every AP is a fraction.

    Raises
    ------
    KeyError, ValueError
        As :func:`chance_ap_samples`.
    """
    aps = chance_ap_samples(labels, permutations=permutations, seed=seed, ap=ap)
    maps = _class_mean(aps)
    count, rate = positives(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class without positives: NaN
        mean_ap = np.nanmean(aps, axis=0)
    return dict(
        permutations=permutations, ap_rule=ap if isinstance(ap, str) else ap.__name__,
        map=float(maps.mean()), map_std=float(maps.std(ddof=1)) if permutations > 1 else 0.0,
        positives=dict(zip(classes, count.tolist())), positive_rate=dict(zip(classes, rate.tolist())),
        ap=dict(zip(classes, mean_ap.tolist())),
    )  # fmt: skip
