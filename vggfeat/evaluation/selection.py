"""Linear SVMs on frozen descriptors and the choice of their C: one binary SVM per label column
(:class:`MultiLabelSVC`), C chosen on a validation split (:func:`select_c`) and stratified
hold-outs (:func:`holdout`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

log = logging.getLogger("vggfeat")

# The C values tried on the validation split (features are L2-normalised, so C ~ 1 is the scale).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)

MAX_ITER = 10_000


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
