"""Appendix B, step 9: the VOC and Caltech protocols on descriptors the caller has computed once
(:func:`voc_classification`, :func:`caltech_classification`).

This is the public module ``vggfeat.svm``: it also gathers the metrics it scores with
(:mod:`vggfeat.evaluation.metrics`: :func:`voc07_ap`, :func:`voc12_ap`, :func:`mean_ap`,
:func:`mean_class_recall`, ...) and the SVMs and model selection it runs
(:mod:`vggfeat.evaluation.selection`: :class:`MultiLabelSVC`, :func:`select_c`, :func:`holdout`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.svm import LinearSVC

from ..data.voc import Protocol
from .metrics import (
    AP_FUNCTIONS,
    average_precisions,
    map_metric,
    mean_ap,
    mean_class_recall,
    per_class_recall,
    precision_recall,
    voc07_ap,
    voc12_ap,
)
from .selection import C_GRID, MAX_ITER, WIDEN, MultiLabelSVC, holdout, select_c

log = logging.getLogger("vggfeat")
__all__ = [
    "VOCResult", "voc_classification", "CaltechResult", "caltech_classification",
    # the metrics (evaluation.metrics) and the SVMs and their C (evaluation.selection)
    "AP_FUNCTIONS", "precision_recall", "voc07_ap", "voc12_ap", "average_precisions", "mean_ap",
    "mean_class_recall", "per_class_recall", "map_metric",
    "C_GRID", "MAX_ITER", "WIDEN", "MultiLabelSVC", "select_c", "holdout",
]  # fmt: skip


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
