"""Choosing the SVM's C: a C at the end of the grid is not taken as the peak. The grid widens by
its own step until the validation score has peaked, and a C still at the edge is warned about.
The scores here are functions of C with a known peak, so the expected C is known by hand."""

import logging

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from vggfeat.evaluation import svm


class Scored:
    """An estimator whose validation score is ``curve(C)``."""

    def __init__(self, C, curve):
        self.C, self.curve = C, curve

    def fit(self, X, y):
        return self


def choose(curve, grid, **kw):
    tried = []

    def make(c):
        tried.append(c)
        return Scored(c, curve)

    best, scores = svm.select_c(
        make, (None, None), (None, None), score=lambda e, X, y: curve(e.C), grid=grid, **kw
    )
    return best, scores, tried


def test_a_peak_beyond_the_top_of_the_grid_is_found_by_widening():
    peak = lambda c: -((np.log10(c) - 2) ** 2)  # best at C = 100, beyond the grid's 10
    best, scores, tried = choose(peak, (0.1, 1.0, 10.0))
    assert best == pytest.approx(100.0) and max(tried) == pytest.approx(1000.0)  # 1000 confirms the peak
    assert sorted(scores) == pytest.approx(sorted(tried))


def test_a_peak_below_the_bottom_of_the_grid_is_found_by_widening():
    best, _, tried = choose(lambda c: -abs(np.log10(c) + 3), (0.1, 1.0, 10.0))
    assert best == pytest.approx(1e-3) and min(tried) == pytest.approx(1e-4)


def test_an_interior_peak_tries_only_the_grid():
    best, _, tried = choose(lambda c: -abs(np.log10(c)), (0.1, 1.0, 10.0))
    assert best == 1.0 and tried == [0.1, 1.0, 10.0]


def test_a_score_still_rising_at_the_widened_edge_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="vggfeat"):
        best, _, tried = choose(lambda c: c, (0.1, 1.0), widen=2)
    assert best == pytest.approx(100.0) and len(tried) == 4
    assert "at the edge" in caplog.text and "--c-grid" in caplog.text


def test_with_real_svms_the_chosen_c_is_never_an_unconfirmed_edge():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 20))
    y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    make = lambda c: LinearSVC(C=c, max_iter=10_000)
    score = lambda e, Xv, yv: float((e.predict(Xv) == yv).mean())
    best, scores = svm.select_c(make, (X[:100], y[:100]), (X[100:], y[100:]), score=score, grid=(1e-4, 1e-3))
    cs = sorted(scores)
    assert best != cs[-1] or scores[best] <= scores[cs[-2]]  # the top edge is a plateau, not a slope
