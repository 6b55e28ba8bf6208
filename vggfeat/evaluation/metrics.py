"""The metrics of Table 11 and 12 as the official devkits compute them: VOC AP (2007's 11 points,
2010's area), mAP, and Caltech's mean class recall; and the mAP scorer that model selection and the
statistics share."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import balanced_accuracy_score

log = logging.getLogger("vggfeat")


def _matlab_colon(a: float, step: float, b: float) -> list[float]:
    """MATLAB's ``a:step:b``, which fills the first half as a + k*step and the second half as
    b - k*step (and the middle as (a+b)/2). For ``0:0.1:1`` this gives exactly 0.6 and 0.7
    (``numpy.arange``/``linspace`` give 0.6000000000000001, 0.7000000000000001) but
    0.30000000000000004 (``i / 10`` gives 0.3)."""
    n = int(round((b - a) / step))
    out = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        out[k] = a + k * step
        out[n - k] = b - k * step
    if n % 2 == 0:
        out[n // 2] = (a + b) / 2
    return out


# VOC2007's 11 recall thresholds, bit-identical to the devkit's ``for t=0:0.1:1``, so that a
# recall of exactly 0.6 or 0.7 counts (as in MATLAB) and a recall of exactly 0.3 (= 3/10, the
# double below 0.30000000000000004) does not (as in MATLAB).
VOC07_THRESHOLDS = tuple(_matlab_colon(0.0, 0.1, 1.0))


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores has {s.size} entries but labels has {y.size}; pass one score per image")
    if not np.isin(y, (1, -1, 0)).all():
        raise ValueError(f"labels must be 1 (present), -1 (absent) or 0 (difficult), got {np.unique(y)}")
    return s, y.astype(np.int64)


def precision_recall(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The devkit's ranked recall and precision of one class, one entry per image in rank order.

    Parameters
    ----------
    scores : array_like, shape (N,)
        One score per image, higher meaning "present"; NaN is the devkit's missing result
        (``-inf``) and ranks last.
    labels : array_like, shape (N,)
        1 (present), -1 (absent) or 0 (difficult).

    Returns
    -------
    tuple of numpy.ndarray, or None
        (recall, precision), each of shape (N,), fractions. Images are ranked by descending
        score, stably (ties keep ground-truth order, as MATLAB's ``sort``). Label 1 counts as a
        true positive, -1 as a false positive, 0 as neither; precision is NaN while only label-0
        images have been seen (MATLAB's 0/0), and the AP functions ignore those entries as
        MATLAB's ``max`` does. None, with a ``RuntimeWarning``, when no image has label 1
        (recall is then undefined).

    Raises
    ------
    ValueError
        If ``scores`` and ``labels`` differ in size, or a label is not 1, -1 or 0.
    """
    s, y = _check(scores, labels)
    s = np.where(np.isnan(s), -np.inf, s)
    gt = y[np.argsort(-s, kind="stable")]
    tp, fp = np.cumsum(gt > 0), np.cumsum(gt < 0)
    npos = int((y > 0).sum())
    if npos == 0:
        warnings.warn(
            "no positive (label 1) image for this class: AP is undefined and returned as NaN "
            "(the devkit would divide by zero); mean_ap skips it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / (tp + fp)
    return tp / npos, prec


def voc07_ap(scores: ArrayLike, labels: ArrayLike) -> float:
    """VOC2007 11-point AP of one class, number for number the devkit's ``VOCevalcls.m``.

    Parameters
    ----------
    scores : array_like, shape (N,)
        One score per image; NaN = no score (ranked last).
    labels : array_like, shape (N,)
        1 (present), -1 (absent) or 0 (difficult, left out).

    Returns
    -------
    float
        The mean over t in 0:0.1:1 of the highest precision at recall >= t (0 where no recall
        reaches t): a fraction in [0, 1]; NaN, with a ``RuntimeWarning``, if no image has label 1.

    Raises
    ------
    ValueError
        As :func:`precision_recall`.

    Notes
    -----
    The 11 thresholds are MATLAB's ``0:0.1:1`` bit for bit (:data:`VOC07_THRESHOLDS`): a recall
    of exactly 0.6 or 0.7 reaches its threshold and one of exactly 0.3 does not, as in the
    devkit. scikit-learn's ``average_precision_score`` is neither VOC rule.
    """
    pr = precision_recall(scores, labels)
    if pr is None:
        return math.nan
    rec, prec = pr
    ap = 0.0
    for t in VOC07_THRESHOLDS:
        p = prec[(rec >= t) & ~np.isnan(prec)]
        ap += (p.max() if p.size else 0.0) / 11
    return float(ap)


def voc12_ap(scores: ArrayLike, labels: ArrayLike) -> float:
    """VOC2010+ AP of one class (the devkit's ``VOCap.m``): the area under the precision envelope.

    Parameters
    ----------
    scores, labels : array_like, shape (N,)
        As in :func:`voc07_ap`.

    Returns
    -------
    float
        The precision made monotone from the right and summed over the steps of recall: a
        fraction in [0, 1]; NaN, with a ``RuntimeWarning``, if no image has label 1.

    Raises
    ------
    ValueError
        As :func:`precision_recall`.
    """
    pr = precision_recall(scores, labels)
    if pr is None:
        return math.nan
    rec, prec = pr
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    # MATLAB's max(a, b) ignores NaN, as np.fmax does.
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


AP_FUNCTIONS = {"voc07": voc07_ap, "voc12": voc12_ap}


def average_precisions(
    scores: ArrayLike,
    labels: ArrayLike,
    ap: Callable[[ArrayLike, ArrayLike], float] = voc07_ap,
    *,
    warn: bool = True,
) -> np.ndarray:
    """Per-class AP of a score matrix.

    Parameters
    ----------
    scores : array_like, shape (N, K)
        One score per image and class.
    labels : array_like, shape (N, K)
        1 (present), -1 (absent) or 0 (difficult).
    ap : callable, default :func:`voc07_ap`
        The AP rule of one column, ``ap(scores (N,), labels (N,)) -> float``.
    warn : bool, default True
        Log a warning naming the classes without a positive image.

    Returns
    -------
    numpy.ndarray, shape (K,)
        AP per class, a fraction; NaN for a class without a positive image (its
        ``RuntimeWarning`` is silenced).

    Raises
    ------
    ValueError
        With a devkit rule, as :func:`precision_recall` (a column's sizes differ, or a label is
        not 1, -1 or 0).
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aps = np.array([ap(scores[:, k], labels[:, k]) for k in range(labels.shape[1])])
    if warn and np.isnan(aps).any():
        log.warning("no positive image for class indices %s: their AP is NaN", np.flatnonzero(np.isnan(aps)))
    return aps


def mean_ap(aps: ArrayLike, *, warn: bool = True) -> float:
    """mAP: the plain mean of the per-class APs (VOC: the 20 classes in devkit order).

    Parameters
    ----------
    aps : array_like, shape (K,)
        Per-class AP, e.g. from :func:`average_precisions`; NaN for a class without positives.
    warn : bool, default True
        Log a warning when classes are skipped.

    Returns
    -------
    float
        The mean over the classes whose AP is not NaN, in the unit of ``aps``; NaN if all are.
    """
    aps = np.asarray(aps, dtype=np.float64)
    ok = ~np.isnan(aps)
    if warn and not ok.all():
        log.warning("mAP skips %d class(es) without positive images", int((~ok).sum()))
    return float(aps[ok].mean()) if ok.any() else math.nan


def mean_class_recall(y: ArrayLike, y_pred: ArrayLike) -> float:
    """Caltech's metric: the mean over the classes present in ``y`` of their recall.

    Parameters
    ----------
    y : array_like, shape (N,)
        True class ids.
    y_pred : array_like, shape (N,)
        Predicted class ids.

    Returns
    -------
    float
        The mean, over the classes in ``y``, of the fraction of their images predicted
        correctly: a fraction (scikit-learn's ``balanced_accuracy_score``, which is exactly this).

    Raises
    ------
    ValueError
        From scikit-learn, if ``y`` and ``y_pred`` differ in length.
    """
    return float(balanced_accuracy_score(y, y_pred))


def per_class_recall(y: ArrayLike, y_pred: ArrayLike, classes: Sequence[int]) -> np.ndarray:
    """The recall of each class in ``classes``.

    Parameters
    ----------
    y : array_like, shape (N,)
        True class ids.
    y_pred : array_like, shape (N,)
        Predicted class ids.
    classes : sequence of int
        The K class ids to report, in this order.

    Returns
    -------
    numpy.ndarray, shape (K,)
        The fraction of each class's images predicted correctly; NaN for a class absent from ``y``.
    """
    y, y_pred = np.asarray(y), np.asarray(y_pred)
    return np.array([np.mean(y_pred[y == c] == c) if (y == c).any() else math.nan for c in classes])


def map_metric(
    ap: str | Callable[[ArrayLike, ArrayLike], float] = "voc07",
) -> Callable[[ArrayLike, ArrayLike], float]:
    """The mAP of a score matrix as a metric: the score of a C candidate, or of two systems.

    Parameters
    ----------
    ap : {"voc07", "voc12"} or callable, default "voc07"
        The AP rule, by name or as a function ``ap(scores (N,), labels (N,)) -> float``.

    Returns
    -------
    callable
        ``metric(scores (N, K), labels (N, K)) -> float``: the mAP (fraction) by the ``ap``
        rule, quiet about classes without positives (skipped, as :func:`mean_ap`). It is also
        the metric to pass to :func:`vggfeat.stats.paired_bootstrap` for two systems' test scores.

    Raises
    ------
    KeyError
        If ``ap`` is a name other than "voc07" or "voc12".
    """
    ap_fn = AP_FUNCTIONS[ap] if isinstance(ap, str) else ap

    def metric(scores, labels) -> float:
        # quiet: classes without positives are reported once, for the final evaluation
        return mean_ap(average_precisions(scores, labels, ap_fn, warn=False), warn=False)

    return metric
