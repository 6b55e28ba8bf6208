"""Chance levels: what a system without information scores, for each metric the project reports.

Top-k error and mean class recall have closed forms; the AP and mAP of a VOC-style test split
are measured by ranking its images at random (permutations), which gives both the level and its
spread, the null distribution that :func:`vggfeat.stats.versus_null` judges a result against.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "chance_topk", "chance_mean_class_recall", "chance_ap_samples", "chance_map_samples",
    "chance_map", "positives", "ap_chance",
]  # fmt: skip


def chance_topk(num_classes: int, k: int = 1) -> float:
    """Top-k error (fraction) of a classifier that ranks the ``num_classes`` classes at random:
    1 - min(k, K) / K (ILSVRC, K = 1000: 0.999 top-1, 0.995 top-5)."""
    if num_classes < 1 or k < 1:
        raise ValueError(f"chance_topk needs num_classes >= 1 and k >= 1, got {num_classes} and {k}")
    return 1.0 - min(k, num_classes) / num_classes


def chance_errors(num_classes: int) -> dict[str, float]:
    """``{"top1", "top5"}``: the top-1 and top-5 error (fractions) of a random ranking of
    ``num_classes`` classes (:func:`chance_topk`; ILSVRC: 0.999 / 0.995), whatever the class
    balance."""
    return {"top1": chance_topk(num_classes, 1), "top5": chance_topk(num_classes, 5)}


def chance_mean_class_recall(num_classes: int) -> float:
    """Mean class recall (fraction) of a classifier that guesses a class at random, or always
    the same one: 1 / K (Caltech-101 with background, K = 102: 0.0098)."""
    if num_classes < 1:
        raise ValueError(f"chance_mean_class_recall needs num_classes >= 1, got {num_classes}")
    return 1.0 / num_classes


def chance_ap_samples(
    labels, *, permutations: int, seed: int = 0, ap: str | Callable = "voc07"
) -> np.ndarray:
    """(permutations, K) per-class AP (fraction) of test scores that carry no information: each
    permutation ranks the images of each class in an independent random order. ``labels``:
    (N, K) VOC-style, 1 present, 0 difficult (ignored), -1 absent; ``ap``: "voc07" (11-point),
    "voc12" or an AP function of (scores, labels). A class without positives gives NaN."""
    from . import svm

    ap_fn = svm.AP_FUNCTIONS[ap] if isinstance(ap, str) else ap
    labels = np.asarray(labels)
    if labels.ndim != 2 or permutations < 1:
        raise ValueError(f"labels must be (N, K) and permutations >= 1, got {labels.shape}, {permutations}")
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(len(labels), dtype=float)[:, None], labels.shape[1])
    return np.stack([svm.average_precisions(rng.permuted(base, axis=0), labels, ap_fn, warn=False)
                     for _ in range(permutations)])  # fmt: skip


def chance_map_samples(
    labels, *, permutations: int, seed: int = 0, ap: str | Callable = "voc07"
) -> np.ndarray:
    """(permutations,) mAP (fraction) of permuted test scores, the null distribution of a
    descriptor without information on this test split: the mean over classes (those with
    positives, as :func:`vggfeat.svm.mean_ap`) of :func:`chance_ap_samples`."""
    return _class_mean(chance_ap_samples(labels, permutations=permutations, seed=seed, ap=ap))


def _class_mean(aps: np.ndarray) -> np.ndarray:
    # the mean over the classes with positives (as svm.mean_ap), per permutation
    ok = ~np.isnan(aps).all(axis=0)
    return aps[:, ok].mean(axis=1) if ok.any() else np.full(len(aps), np.nan)


def chance_map(
    labels, *, permutations: int, seed: int = 0, ap: str | Callable = "voc07"
) -> tuple[float, float]:
    """The chance mAP of a test split (fraction): mean and std (ddof=1) of
    :func:`chance_map_samples`."""
    m = chance_map_samples(labels, permutations=permutations, seed=seed, ap=ap)
    return float(m.mean()), float(m.std(ddof=1)) if m.size > 1 else 0.0


def positives(labels) -> tuple[np.ndarray, np.ndarray]:
    """Per class of VOC-style (N, K) ``labels``: the number of positive images and the positive
    rate among the non-difficult ones (label != 0), the approximate AP of a random ranking
    (the exact one, with the 11-point rule's interpolation, is :func:`chance_ap_samples`)."""
    labels = np.asarray(labels)
    pos, counted = (labels > 0).sum(axis=0), (labels != 0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pos, np.where(counted > 0, pos / np.maximum(counted, 1), np.nan)


def ap_chance(
    labels, *, classes: Sequence[str], ap: str | Callable, permutations: int, seed: int = 0
) -> dict:
    """The chance level of a VOC-style test split (``labels``: (N, K) in {1, 0, -1}), as fractions,
    per class (dicts keyed by ``classes``): ``positives``, ``positive_rate`` (see
    :func:`positives`) and ``ap``, the mean AP of ``permutations`` random rankings by the ``ap``
    rule; and ``map`` / ``map_std``, the mAP at chance (mean, std of :func:`chance_map_samples`)."""
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
