"""Appendix B, step 9: linear SVMs on frozen descriptors, and the metrics of Table 11 / 12.

The VOC AP rules of the official devkit (:func:`voc07_ap`, :func:`voc12_ap`), mAP and Caltech's
mean class recall; :class:`MultiLabelSVC` and the choice of C on a validation split
(:func:`select_c`); and the two protocols, :func:`voc_classification` and
:func:`caltech_classification`, on descriptors the caller has computed once.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

if TYPE_CHECKING:
    from ..data.voc import Protocol

log = logging.getLogger("vggfeat")

# The C values tried on the validation split (features are L2-normalised, so C ~ 1 is the scale).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
MAX_ITER = 10_000


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


class MultiLabelSVC(BaseEstimator):
    """One binary ``LinearSVC`` per column of a label matrix in {1, -1, 0}.

    Parameters
    ----------
    C : float, default 1.0
        The SVMs' regularisation parameter (``LinearSVC(C=...)``), the same for every column.
    max_iter : int, default :data:`MAX_ITER`
        ``LinearSVC``'s iteration limit.

    Attributes
    ----------
    estimators_ : list of LinearSVC or None
        One per column, after :meth:`fit`; None for a constant column.
    constant_ : list of int
        The columns with a single class among their training images (possible in quick runs):
        they score 0 for every image.
    """

    def __init__(self, C: float = 1.0, *, max_iter: int = MAX_ITER) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: ArrayLike, Y: ArrayLike) -> MultiLabelSVC:
        """Fit one SVM per column of ``Y``.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Descriptors.
        Y : array_like, shape (N, K)
            1 (present), -1 (absent) or 0 ("difficult", VOC): an image labelled 0 in column k is
            left out of that column's training set.

        Returns
        -------
        MultiLabelSVC
            ``self``, fitted (``random_state=0``, as liblinear shuffles).
        """
        X, Y = np.asarray(X), np.asarray(Y)
        self.estimators_, self.constant_ = [], []
        for k in range(Y.shape[1]):
            keep = Y[:, k] != 0
            y = Y[keep, k] > 0
            if y.all() or not y.any():
                self.estimators_.append(None)
                self.constant_.append(k)
                continue
            svc = LinearSVC(C=self.C, max_iter=self.max_iter, random_state=0)  # liblinear shuffles
            self.estimators_.append(svc.fit(X[keep], y))
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Signed distances of ``X`` (N, D) to each column's hyperplane.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Descriptors.

        Returns
        -------
        numpy.ndarray, shape (N, K)
            Positive means "present"; 0 in the :attr:`constant_` columns.
        """
        X = np.asarray(X)
        cols = [np.zeros(len(X)) if e is None else e.decision_function(X) for e in self.estimators_]
        return np.stack(cols, axis=1)


WIDEN = 4  # at most this many steps past each end of the C grid


def select_c(
    make: Callable[[float], BaseEstimator],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    score: Callable[[BaseEstimator, np.ndarray, np.ndarray], float],
    grid: Sequence[float] = C_GRID,
    widen: int = WIDEN,
) -> tuple[float, dict[float, float]]:
    """Choose C on a validation split: fit ``make(C)`` on ``train``, score it on ``val``.

    Parameters
    ----------
    make : callable
        ``make(C) -> estimator`` with a ``fit(X, y)`` that returns the estimator.
    train : tuple of numpy.ndarray
        (X, y) to fit on.
    val : tuple of numpy.ndarray
        (X, y) to score on.
    score : callable
        ``score(fitted estimator, X, y) -> float``, higher is better (e.g. mAP).
    grid : sequence of float, default :data:`C_GRID`
        The C values tried first.
    widen : int, default :data:`WIDEN`
        At most this many extra C values past an end of ``grid``.

    Returns
    -------
    best : float
        The C with the highest validation score (the smallest C on ties).
    scores : dict of float to float
        The validation score of every C tried.

    Notes
    -----
    A best C at an end of the C values tried, strictly better than its neighbour, has not shown
    its peak: the grid is extended past that end by its own end ratio (x10 for 1, 10, ...), up
    to ``widen`` steps, until the score turns down. A C still at the edge then is logged as a
    warning.
    """
    scores = {}

    def fit(c: float) -> None:
        scores[float(c)] = float(score(make(c).fit(*train), *val))
        log.info("C=%g: validation score %.4f", c, scores[float(c)])

    for c in grid:
        fit(c)
    for step in range(widen + 1):
        edge = _rising_edge(scores)
        if edge is None:
            break
        if step == widen:
            log.warning(
                "C=%g is at the edge of the C values tried (%s) and its validation score is still "
                "rising: widen --c-grid past it",
                edge[0],
                ", ".join(f"{c:g}" for c in sorted(scores)),
            )
            break
        fit(edge[1])
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores


def _rising_edge(scores: dict[float, float]) -> tuple[float, float] | None:
    """(the best C, the next C past it) when the best C ends the grid and beats its neighbour."""
    cs = sorted(scores)
    if len(cs) < 2:
        return None
    best = max(scores, key=lambda c: (scores[c], -c))
    for end, neighbour in ((cs[-1], cs[-2]), (cs[0], cs[1])):
        if best == end and scores[end] > scores[neighbour]:
            return end, end * end / neighbour
    return None


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


def _voc_score(ap: Callable) -> Callable:
    metric = map_metric(ap)
    return lambda est, X, Y: metric(est.decision_function(X), Y)


@dataclass
class VOCResult:
    """The result of :func:`voc_classification`.

    Parameters
    ----------
    aps : numpy.ndarray, shape (K,)
        Per-class AP on the test images, fractions (NaN for a class without positives).
    map : float
        Their mean, :func:`mean_ap`.
    scores : numpy.ndarray, shape (N_test, K)
        The refit SVMs' test scores.
    C : float
        The C chosen on the validation split.
    val_scores : dict of float to float
        The validation mAP of every C tried.
    model : MultiLabelSVC
        The SVMs refit with ``C``.
    ap : str, default "voc07"
        The AP rule, "voc07" or "voc12".
    """

    aps: np.ndarray
    map: float
    scores: np.ndarray
    C: float
    val_scores: dict[float, float]
    model: MultiLabelSVC = field(repr=False)
    ap: str = "voc07"


def voc_classification(
    X: np.ndarray,
    Y: np.ndarray,
    protocol: Protocol | None = None,
    *,
    select: tuple[np.ndarray, np.ndarray] | None = None,
    fit: np.ndarray | None = None,
    test: np.ndarray | None = None,
    ap: str = "voc07",
    grid: Sequence[float] = C_GRID,
) -> VOCResult:
    """The VOC protocol on precomputed descriptors: choose C, refit, report per-class AP.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, D)
        Descriptors of all the images.
    Y : numpy.ndarray, shape (N, K)
        Their labels, 1 (present), -1 (absent) or 0 (difficult).
    protocol : vggfeat.data.voc.Protocol, optional
        Gives ``select``, ``fit``, ``test`` and ``ap`` at once, overriding those arguments.
    select : tuple of numpy.ndarray, optional
        (train rows, validation rows): C is chosen by training on the first and scoring mAP on
        the second.
    fit : numpy.ndarray, optional
        The rows the SVMs are refit on with that C.
    test : numpy.ndarray, optional
        The rows the per-class AP is reported on.
    ap : {"voc07", "voc12"}, default "voc07"
        The AP rule: 11-point (VOC2007) or area under the envelope (VOC2010+).
    grid : sequence of float, default :data:`C_GRID`
        The C values tried first (:func:`select_c`).

    Returns
    -------
    VOCResult

    Raises
    ------
    TypeError
        If neither ``protocol`` nor all of ``select``, ``fit`` and ``test`` are given.
    KeyError
        If ``ap`` is a name other than "voc07" or "voc12".
    ValueError
        If a label is not 1, -1 or 0.

    Notes
    -----
    One binary ``LinearSVC`` per class (:class:`MultiLabelSVC`); images labelled 0
    ("difficult") for a class are left out of that class's training set. One C for all classes,
    the one with the best validation mAP (:func:`select_c`): the paper does not state its SVM
    settings. Features are computed once, by the caller, and only sliced here.
    """
    if protocol is not None:
        select, fit, test, ap = protocol.select, protocol.fit, protocol.test, protocol.ap
    if select is None or fit is None or test is None:
        raise TypeError("voc_classification needs a protocol, or select=, fit= and test= row indices")
    ap_fn = AP_FUNCTIONS[ap]
    tr, va = select
    C, val_scores = select_c(
        lambda c: MultiLabelSVC(C=c), (X[tr], Y[tr]), (X[va], Y[va]), score=_voc_score(ap_fn), grid=grid
    )
    model = MultiLabelSVC(C=C).fit(X[fit], Y[fit])
    if model.constant_:
        log.warning("classes %s have a single label in the training images: constant scores", model.constant_)
    scores = model.decision_function(X[test])
    aps = average_precisions(scores, Y[test], ap_fn)
    return VOCResult(aps=aps, map=mean_ap(aps), scores=scores, C=C, val_scores=val_scores, model=model, ap=ap)


def holdout(
    idx: np.ndarray, y: np.ndarray | None = None, *, fraction: float = 0.2, seed: int = 0
) -> list[np.ndarray]:
    """Split row indices into the rows to fit on and the rows held out.

    Parameters
    ----------
    idx : numpy.ndarray, shape (M,)
        Row indices to split.
    y : numpy.ndarray, shape (M,), optional
        The labels of those rows, to stratify the split by; None: not stratified.
    fraction : float, default 0.2
        The fraction of the rows held out.
    seed : int, default 0
        ``random_state`` of scikit-learn's ``train_test_split``.

    Returns
    -------
    [fit, held_out] : list of numpy.ndarray
        Two arrays of row indices.

    Raises
    ------
    ValueError
        If the split cannot be made, e.g. a class is too small to stratify.
    """
    try:
        return train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    except ValueError as e:
        raise ValueError(
            f"cannot hold out {fraction:.0%} of {len(idx)} training images stratified by class "
            f"({e}); use more training images per class"
        ) from None


@dataclass
class CaltechResult:
    """The result of :func:`caltech_classification`; recalls are fractions.

    Parameters
    ----------
    recalls : list of float
        Mean class recall on the test images of each split.
    mean : float
        Their mean over the splits.
    std : float
        Their standard deviation over the splits (population, ddof=0).
    Cs : list of float
        The C chosen for each split.
    class_recall : numpy.ndarray, shape (K,)
        The recall of each class (in ``numpy.unique(y)`` order) averaged over the splits,
        ignoring splits where the class has no test image (NaN if it never has one).
    """

    recalls: list[float]
    mean: float
    std: float
    Cs: list[float]
    class_recall: np.ndarray


def caltech_classification(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    holdout_fraction: float = 0.2,
    grid: Sequence[float] = C_GRID,
    seed: int = 0,
) -> CaltechResult:
    """The Caltech protocol on precomputed descriptors: per split, choose C, refit, measure recall.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, D)
        Descriptors of all the images.
    y : numpy.ndarray, shape (N,)
        Their class ids.
    splits : sequence of (numpy.ndarray, numpy.ndarray)
        (train rows, test rows) of each split.
    holdout_fraction : float, default 0.2
        The fraction of each split's training images held out (stratified) to choose C.
    grid : sequence of float, default :data:`C_GRID`
        The C values tried first (:func:`select_c`).
    seed : int, default 0
        The hold-out of split i uses seed ``seed + i``.

    Returns
    -------
    CaltechResult

    Raises
    ------
    ValueError
        If a split's training images cannot be held out stratified (:func:`holdout`).

    Notes
    -----
    One-vs-rest ``LinearSVC`` (its multi-class mode): C is chosen by mean class recall on the
    hold-out, then the SVM is refit on all the split's training images and measured on its
    test images.
    """
    make = lambda c: LinearSVC(
        C=c, max_iter=MAX_ITER, random_state=0
    )  # one-vs-rest is LinearSVC's multi-class
    score = lambda est, Xv, yv: mean_class_recall(yv, est.predict(Xv))
    classes = np.unique(y)
    recalls, Cs, per_class = [], [], []
    for i, (train, test) in enumerate(splits):
        fit, val = holdout(train, y[train], fraction=holdout_fraction, seed=seed + i)
        C, _ = select_c(make, (X[fit], y[fit]), (X[val], y[val]), score=score, grid=grid)
        pred = make(C).fit(X[train], y[train]).predict(X[test])
        recalls.append(mean_class_recall(y[test], pred))
        per_class.append(per_class_recall(y[test], pred, classes))
        Cs.append(C)
        log.info("split %d: C=%g, mean class recall %.4f", i, C, recalls[-1])
    return CaltechResult(
        recalls=recalls,
        mean=float(np.mean(recalls)),
        std=float(np.std(recalls)),
        Cs=Cs,
        class_recall=np.nanmean(np.stack(per_class), axis=0),
    )
