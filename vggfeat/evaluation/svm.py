"""Appendix B, step 9: linear SVMs on frozen descriptors, and the metrics of Table 11 / 12.

Metrics
    :func:`voc07_ap` / :func:`voc12_ap` reproduce the official PASCAL VOC devkit
    (``VOCevalcls.m``, ``VOCap.m``) number for number; :func:`mean_class_recall` is the Caltech
    metric. scikit-learn's ``average_precision_score`` is neither VOC AP.

Protocols (features are computed once, by the caller, and only sliced here)
    VOC: one binary ``LinearSVC`` per class; images labelled 0 ("difficult") for a class are left
    out of that class's training set. One C for all classes, the one with the best validation mAP
    on the grid (the paper does not state its SVM settings).
    Caltech: one-vs-rest ``LinearSVC``; per split, 20% of the training images (stratified) are
    held out to choose C, then the SVM is refit on all training images.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

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


def precision_recall(scores, labels) -> tuple[np.ndarray, np.ndarray] | None:
    """The devkit's ranked recall and precision, one entry per image in rank order.

    Ranking: descending score, stable (ties keep ground-truth order, as MATLAB's ``sort``); a NaN
    score is the devkit's missing result (``-inf``), so it ranks last. Label 1 counts as a true
    positive, -1 as a false positive, 0 as neither. Precision is NaN while only label-0 images
    have been seen (MATLAB's 0/0); the AP functions ignore those entries as MATLAB's ``max``
    does. Returns None (with a warning) when no image has label 1: recall is then undefined.
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


def voc07_ap(scores, labels) -> float:
    """VOC2007 11-point AP: mean over t in 0:0.1:1 of the highest precision at recall >= t
    (0 where no recall reaches t). ``scores``: (N,) float, NaN = no score; ``labels``: (N,) in
    {1, -1, 0}. Returns a float in [0, 1], NaN if the class has no positive image."""
    pr = precision_recall(scores, labels)
    if pr is None:
        return math.nan
    rec, prec = pr
    ap = 0.0
    for t in VOC07_THRESHOLDS:
        p = prec[(rec >= t) & ~np.isnan(prec)]
        ap += (p.max() if p.size else 0.0) / 11
    return float(ap)


def voc12_ap(scores, labels) -> float:
    """VOC2010+ AP (``VOCap.m``): area under the precision envelope, the precision made
    monotone from the right and summed over the steps of recall. Same inputs as
    :func:`voc07_ap`."""
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
    scores: np.ndarray, labels: np.ndarray, ap: Callable = voc07_ap, *, warn: bool = True
) -> np.ndarray:
    """Per-class AP of (N, K) scores against (N, K) labels in {1, -1, 0} -> (K,)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aps = np.array([ap(scores[:, k], labels[:, k]) for k in range(labels.shape[1])])
    if warn and np.isnan(aps).any():
        log.warning("no positive image for class indices %s: their AP is NaN", np.flatnonzero(np.isnan(aps)))
    return aps


def mean_ap(aps, *, warn: bool = True) -> float:
    """mAP: the plain mean of the per-class APs (VOC: the 20 classes in devkit order). Classes
    whose AP is NaN (no positive image) are skipped with a warning; NaN if all are."""
    aps = np.asarray(aps, dtype=np.float64)
    ok = ~np.isnan(aps)
    if warn and not ok.all():
        log.warning("mAP skips %d class(es) without positive images", int((~ok).sum()))
    return float(aps[ok].mean()) if ok.any() else math.nan


def mean_class_recall(y, y_pred) -> float:
    """Caltech's metric: the mean over the classes present in ``y`` of the fraction of their
    images predicted correctly (scikit-learn's balanced accuracy is exactly this)."""
    return float(balanced_accuracy_score(y, y_pred))


def per_class_recall(y, y_pred, classes: Sequence[int]) -> np.ndarray:
    """Recall of each class in ``classes`` -> (K,), NaN for a class absent from ``y``."""
    y, y_pred = np.asarray(y), np.asarray(y_pred)
    return np.array([np.mean(y_pred[y == c] == c) if (y == c).any() else math.nan for c in classes])


class MultiLabelSVC(BaseEstimator):
    """One binary ``LinearSVC`` per column of a label matrix with entries 1 / -1 / 0, where 0
    ("difficult", VOC) removes the image from that column's training set.

    ``fit(X (N, D), Y (N, K))``; ``decision_function(X) -> (N, K)`` signed distances. A column
    with a single class in training (possible in quick runs) gets a constant score of 0 and is
    listed in ``constant_``.
    """

    def __init__(self, C: float = 1.0, *, max_iter: int = MAX_ITER):
        self.C = C
        self.max_iter = max_iter

    def fit(self, X, Y):
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

    def decision_function(self, X) -> np.ndarray:
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
    """Fit ``make(C)`` on ``train`` = (X, y) for each C of ``grid`` and score it on ``val``;
    returns the best C (the smallest on ties) and every validation score.

    A best C at an end of the grid, strictly better than its neighbour, has not shown its peak:
    the grid is extended past that end by its own end ratio (x10 for 1, 10, ...), up to ``widen``
    steps, until the score turns down; a C still at the edge then is logged as a warning."""
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


def map_metric(ap: str | Callable = "voc07") -> Callable:
    """metric(scores (N, K), labels (N, K)) -> mAP (fraction) by the ``ap`` rule, quiet about
    classes without positives (skipped, as :func:`mean_ap`): the score of a C candidate, and the
    metric to pass to :func:`vggfeat.stats.paired_bootstrap` for two systems' test scores."""
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
    """Per-class AP (K,) and mAP on the evaluation images, test scores (N_test, K), the chosen C
    and the validation mAP of every C tried; ``model`` is the SVM refit with that C; ``ap``: the
    AP rule ("voc07" or "voc12")."""

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
    protocol=None,
    *,
    select: tuple[np.ndarray, np.ndarray] | None = None,
    fit: np.ndarray | None = None,
    test: np.ndarray | None = None,
    ap: str = "voc07",
    grid: Sequence[float] = C_GRID,
) -> VOCResult:
    """The VOC protocol on precomputed descriptors ``X`` (N, D) and labels ``Y`` (N, K): choose
    C by training on ``select[0]`` and scoring mAP on ``select[1]`` (row indices), refit on
    ``fit`` and report per-class AP on ``test`` (``ap`` = "voc07" 11-point or "voc12").
    ``protocol`` (a :class:`vggfeat.data.voc.Protocol`) gives all four at once."""
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


def holdout(idx: np.ndarray, y: np.ndarray | None = None, *, fraction: float = 0.2, seed: int = 0):
    """Split row indices ``idx`` into (fit, held out) with ``fraction`` held out, stratified by
    ``y`` (the labels of those rows) when given. Raises if a class is too small to split."""
    try:
        return train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    except ValueError as e:
        raise ValueError(
            f"cannot hold out {fraction:.0%} of {len(idx)} training images stratified by class "
            f"({e}); use more training images per class"
        ) from None


@dataclass
class CaltechResult:
    """Mean class recall per split, its mean and std (population, ddof=0) over the splits, the
    chosen C per split, and the per-class recall (K,) averaged over the splits."""

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
    """The Caltech protocol on precomputed descriptors ``X`` (N, D) and class ids ``y`` (N,):
    for each (train, test) split, choose C on a stratified hold-out of the training images, refit
    one-vs-rest ``LinearSVC`` on all of them, and measure mean class recall on the test images."""
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
