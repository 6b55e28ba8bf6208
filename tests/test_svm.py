"""VOC AP, mean class recall and the SVM protocols of vggfeat.svm, against hand-computed values
and a plain-loop transcription of the devkit's VOCevalcls.m / VOCap.m."""

import math
import warnings

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from vggfeat.evaluation import metrics, svm


def _matlab_max(values):
    """MATLAB's max over a vector: ignores NaN; empty if nothing is left."""
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) if vals else None


def devkit_pr(scores, labels):
    """VOCevalcls.m, line by line: out = -inf for missing results; [so, si] = sort(-out) (stable);
    tp = gt(si) > 0; fp = gt(si) < 0; cumsum; rec = tp / sum(gt > 0); prec = tp ./ (fp + tp)."""
    out = [-math.inf if math.isnan(s) else s for s in scores]
    si = sorted(range(len(out)), key=lambda i: -out[i])  # Python's sort is stable, like MATLAB's
    tp = fp = 0
    rec, prec = [], []
    npos = sum(1 for g in labels if g > 0)
    for i in si:
        tp += labels[i] > 0
        fp += labels[i] < 0
        rec.append(tp / npos)
        prec.append(tp / (fp + tp) if fp + tp else math.nan)
    return rec, prec


def devkit_voc07(scores, labels):
    rec, prec = devkit_pr(scores, labels)
    ap = 0.0
    for t in [0 + k * 0.1 for k in range(5)] + [0.5] + [1 - k * 0.1 for k in range(4, -1, -1)]:
        p = _matlab_max([p for r, p in zip(rec, prec) if r >= t])
        ap += (0 if p is None else p) / 11
    return ap


def devkit_vocap(scores, labels):
    """VOCap.m: mrec = [0; rec; 1]; mpre = [0; prec; 0]; mpre(i) = max(mpre(i), mpre(i+1)) from
    the right; i = find(mrec(2:end) ~= mrec(1:end-1)) + 1; ap = sum((mrec(i) - mrec(i-1)) .* mpre(i))."""
    rec, prec = devkit_pr(scores, labels)
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        m = _matlab_max([mpre[i], mpre[i + 1]])
        mpre[i] = math.nan if m is None else m
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


# --- hand-computed cases -------------------------------------------------------------------


def test_simple_ranking_by_hand():
    # ranked 1, -1, 1, -1: rec .5 .5 1 1, prec 1 .5 2/3 .5
    s, y = [0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1]
    assert svm.voc07_ap(s, y) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert svm.voc12_ap(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_ties_keep_ground_truth_order():
    # Equal scores: the stable sort keeps file order, so the negative listed first ranks first.
    assert svm.voc12_ap([0.5, 0.5, 0.5], [-1, 1, 1]) == pytest.approx(2 / 3)
    assert svm.voc07_ap([0.5, 0.5, 0.5], [-1, 1, 1]) == pytest.approx(2 / 3)
    assert svm.voc12_ap([0.5, 0.5, 0.5], [1, 1, -1]) == pytest.approx(1.0)


def test_difficult_at_top_is_neither_tp_nor_fp():
    s, y = [3.0, 2.0, 1.0], [0, 1, -1]
    rec, prec = svm.precision_recall(s, y)
    assert np.isnan(prec[0]) and rec[0] == 0
    assert svm.voc07_ap(s, y) == pytest.approx(1.0)
    assert svm.voc12_ap(s, y) == 1.0
    # a difficult image between positive and negative changes nothing either
    assert svm.voc12_ap([3.0, 2.0, 1.0], [1, 0, -1]) == 1.0
    assert svm.voc12_ap([3.0, 2.0, 1.0], [-1, 0, 1]) == pytest.approx(0.5)


def test_missing_scores_rank_last():
    # ranked 0.2 (1), 0.1 (-1), NaN (1)
    s, y = [math.nan, 0.1, 0.2], [1, -1, 1]
    assert svm.voc12_ap(s, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert svm.voc07_ap(s, y) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_only_difficult_positives_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="no positive"):
        assert math.isnan(svm.voc07_ap([1.0, 2.0], [0, -1]))
    with pytest.warns(RuntimeWarning, match="no positive"):
        assert math.isnan(svm.voc12_ap([1.0, 2.0], [0, -1]))
    assert svm.mean_ap([0.5, math.nan, 1.0]) == pytest.approx(0.75)


def _ranked(labels):
    return np.arange(len(labels), 0, -1, dtype=float), labels


def test_recall_exactly_0_6_counts_at_threshold_0_6():
    # 5 positives: 3 first (recall 3/5 = 0.6 at precision 1), 6 negatives, 2 positives.
    s, y = _ranked([1, 1, 1] + [-1] * 6 + [1, 1])
    assert svm.voc07_ap(s, y) == pytest.approx((7 * 1 + 4 * 5 / 11) / 11)  # t = 0 ... 0.6 reach 1


def test_recall_exactly_0_7_counts_at_threshold_0_7():
    s, y = _ranked([1] * 7 + [-1] * 3 + [1] * 3)
    assert svm.voc07_ap(s, y) == pytest.approx((8 * 1 + 3 * 10 / 13) / 11)  # t = 0 ... 0.7 reach 1


def test_recall_exactly_0_3_does_not_count_as_in_matlab():
    # MATLAB's 0:0.1:1 holds 0.30000000000000004 > 3/10: the devkit misses precision 1 at t = 0.3.
    s, y = _ranked([1] * 3 + [-1] * 7 + [1] * 7)
    assert metrics.VOC07_THRESHOLDS[3] == 0.1 * 3 and metrics.VOC07_THRESHOLDS[6:8] == (0.6, 0.7)
    assert svm.voc07_ap(s, y) == pytest.approx((3 * 1 + 8 * 10 / 17) / 11)


def test_mean_class_recall_by_hand():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 0, 2]
    assert svm.mean_class_recall(y, pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    np.testing.assert_allclose(svm.per_class_recall(y, pred, [0, 1, 2, 3]), [2 / 3, 1 / 2, 1, np.nan])


# --- against the devkit transcription ------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_matches_devkit_transcription(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    scores = rng.integers(0, 8, n).astype(float)  # many ties
    scores[rng.random(n) < 0.1] = np.nan
    labels = rng.choice([1, -1, 0], n, p=[0.3, 0.55, 0.15])
    labels[rng.integers(n)] = 1
    assert svm.voc12_ap(scores, labels) == pytest.approx(devkit_vocap(list(scores), list(labels)), abs=1e-12)
    assert svm.voc07_ap(scores, labels) == pytest.approx(devkit_voc07(list(scores), list(labels)), abs=1e-12)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="labels must be"):
        svm.voc07_ap([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match="one score per image"):
        svm.voc12_ap([1.0], [1, -1])


# --- SVMs ----------------------------------------------------------------------------------


def test_difficult_images_are_left_out_of_training():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    Y = rng.choice([1, -1, 0], size=(30, 2))
    model = svm.MultiLabelSVC(C=0.5).fit(X, Y)
    for k in range(2):
        keep = Y[:, k] != 0
        ref = LinearSVC(C=0.5, max_iter=svm.MAX_ITER).fit(X[keep], Y[keep, k] > 0)
        np.testing.assert_allclose(model.estimators_[k].coef_, ref.coef_)
    assert model.decision_function(X).shape == (30, 2)


def test_select_c_picks_best_and_smallest_on_ties():
    class Stub:
        def __init__(self, c):
            self.c = c

        def fit(self, X, y):
            return self

    score = lambda est, X, y: {0.1: 0.5, 1.0: 0.9, 10.0: 0.9}[est.c]
    best, scores = svm.select_c(Stub, (None, None), (None, None), score=score, grid=(0.1, 1.0, 10.0))
    assert best == 1.0 and scores == {0.1: 0.5, 1.0: 0.9, 10.0: 0.9}


def _blobs(n_per, k, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(k, d) * 5
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + rng.normal(scale=0.3, size=(len(y), d)), y


def test_voc_protocol_on_separable_data():
    X, c = _blobs(12, 3)
    Y = np.where(np.eye(3)[c] > 0, 1, -1)
    Y[0, 0] = 0  # a difficult image
    idx = np.arange(len(X))
    tr, va = idx[idx % 3 == 0], idx[idx % 3 == 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence or NaN warnings
        res = svm.voc_classification(
            X, Y, select=(tr, va), fit=np.r_[tr, va], test=idx[idx % 3 == 2], grid=(0.1, 1.0), ap="voc07"
        )
    assert res.C in (0.1, 1.0) and set(res.val_scores) == {0.1, 1.0}
    np.testing.assert_allclose(res.aps, 1.0)
    assert res.map == pytest.approx(1.0) and res.scores.shape == (12, 3)


def test_caltech_protocol_on_separable_data():
    X, y = _blobs(10, 4)
    rng = np.random.default_rng(1)
    splits = []
    for _ in range(2):
        perm = rng.permutation(len(y))
        splits.append((np.sort(perm[:30]), np.sort(perm[30:])))
    res = svm.caltech_classification(X, y, splits, grid=(0.1, 1.0))
    assert res.recalls == [1.0, 1.0] and res.mean == 1.0 and res.std == 0.0
    assert res.class_recall.shape == (4,) and len(res.Cs) == 2


def test_voc_classification_takes_the_protocol_whole():
    """A VOC protocol passed whole gives the result its four parts give one by one; without
    either, a clear error."""
    from vggfeat.data.voc import Protocol

    rng = np.random.default_rng(0)
    Y = rng.choice([1, -1, -1], size=(60, 3))
    X = Y + rng.normal(0, 1.0, Y.shape)
    idx = np.arange(60)
    proto = Protocol((idx[:20], idx[20:40]), idx[:40], idx[40:], "voc07", "test")
    whole = svm.voc_classification(X, Y, proto)
    parts = svm.voc_classification(X, Y, select=proto.select, fit=proto.fit, test=proto.test, ap="voc07")
    assert whole.map == parts.map and whole.C == parts.C
    with pytest.raises(TypeError, match="needs a protocol"):
        svm.voc_classification(X, Y)
