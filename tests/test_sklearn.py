"""VGGFeatures: scikit-learn's estimator checks that apply to an image transformer, pipelines and
grid search, feature names that show their blocks (checked against single-scale and single-net
extracts). Tiny nets (crop 32) on small images."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import check_estimator

import vggfeat
from vggfeat.sklearn import VGGFeatures


def tiny_net(config="A", seed=0):
    torch.manual_seed(seed)
    return vggfeat.vgg(config, width=1 / 16, fc_dim=32, num_classes=10, crop=32).eval()


KW = dict(num_workers=0, progress=False)
IMAGES = "takes images, not a numeric 2-D feature matrix (a 2-D array is one grayscale image)"
NO_DATA = "fit only builds the frozen network (Appendix B) and reads no data to validate"
# Checks scikit-learn runs on a transformer that do not apply to one whose inputs are images,
# each with its reason; every other check runs and must pass.
NOT_FOR_IMAGES = {
    "check_n_features_in": "images have no fixed number of input features (no n_features_in_)",
    "check_n_features_in_after_fitting": "images have no fixed number of input features",
    "check_estimators_overwrite_params": (
        "joblib.hash of a deep copy of a torch module differs from the module's own (pickled "
        "storages); test_fit_and_transform_leave_the_network_as_it_was checks the weights"
    ),
    "check_estimators_dtypes": IMAGES,
    "check_dtype_object": IMAGES,
    "check_transformer_data_not_an_array": IMAGES,
    "check_transformer_general": IMAGES,
    "check_methods_sample_order_invariance": IMAGES,
    "check_methods_subset_invariance": IMAGES,
    "check_fit2d_predict1d": IMAGES,
    "check_transformer_preserve_dtypes": "descriptors are float32 whatever the input's dtype",
    "check_complex_data": NO_DATA,
    "check_estimators_empty_data_messages": NO_DATA,
    "check_estimators_nan_inf": NO_DATA,
    "check_estimator_sparse_tag": NO_DATA,
    "check_fit1d": NO_DATA,
}


class _GateLifted(VGGFeatures):
    """VGGFeatures as it is, but tagged as taking 2-D arrays: scikit-learn runs no check at all
    on an estimator whose tags say it does not (``two_d_array=False``, as VGGFeatures says)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags

    def transform(self, X):
        # the checks' data are standard-normal numbers; float pixels must lie in [0, 1]
        X = np.asarray(X)
        return super().transform(1 / (1 + np.exp(-X)) if X.dtype.kind == "f" else X)


def test_scikit_learn_checks_that_apply_to_an_image_transformer_pass():
    est = _GateLifted(model=tiny_net(), scales=(32,), **KW)
    results = check_estimator(est, expected_failed_checks=NOT_FOR_IMAGES, on_fail=None, on_skip=None)
    status = {}
    for r in results:
        status.setdefault(r["check_name"], set()).add(r["status"])
    failed = {name for name, s in status.items() if "failed" in s}
    assert not failed, failed
    passed = {name for name, s in status.items() if s == {"passed"}}
    assert (
        len(passed) >= 25
        and {"check_fit_idempotent", "check_estimators_pickle", "check_set_params"} <= passed
    )
    assert set(NOT_FOR_IMAGES) <= set(status)  # each listed check exists and was run
    assert not VGGFeatures().__sklearn_tags__().input_tags.two_d_array


def test_fit_and_transform_leave_the_network_as_it_was():
    net = tiny_net()
    before = vggfeat.fingerprint(net)
    VGGFeatures(model=net, scales=(32,), **KW).fit_transform([np.zeros((40, 36, 3), np.uint8)])
    assert vggfeat.fingerprint(net) == before and not net.training


def test_pipeline_and_grid_search():
    est = VGGFeatures(model="A", scales=(224,), progress=False)
    with pytest.raises(NotFittedError):
        est.transform([np.zeros((32, 32, 3), np.uint8)])
    m = tiny_net()
    # two visually distinct classes: dark and bright images
    imgs = [np.full((32, 32 + i, 3), 20 + 3 * i, np.uint8) for i in range(6)]
    imgs += [np.full((32, 32 + i, 3), 230 - 3 * i, np.uint8) for i in range(6)]
    y = np.array([0] * 6 + [1] * 6)
    feats = VGGFeatures(model=m, scales=(32,), **KW)
    Z = feats.fit_transform(imgs)
    assert Z.shape == (12, 32) and len(feats.get_feature_names_out()) == 32
    cloned = clone(feats)  # scikit-learn deep-copies a non-estimator parameter such as a network
    assert not hasattr(cloned, "extractor_") and vggfeat.fingerprint(cloned.model) == vggfeat.fingerprint(m)
    pipe = make_pipeline(VGGFeatures(model=m, scales=(32,), **KW), LinearSVC())
    gs = GridSearchCV(pipe, {"linearsvc__C": [0.1, 10.0]}, cv=2).fit(imgs, y)
    assert gs.best_estimator_.predict(imgs).shape == (12,)
    np.testing.assert_allclose(gs.best_estimator_[0].transform(imgs), Z, atol=1e-6)


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + i % 3, 36 + i, 3), dtype=np.uint8) for i in range(n)]


def test_plain_names_for_one_net_and_combined_scales():
    est = VGGFeatures(model=tiny_net(), scales=(32, 48), **KW).fit()
    names = est.get_feature_names_out()
    assert list(names[:2]) == ["A_fc7_0", "A_fc7_1"] and names[-1] == "A_fc7_31" and len(names) == 32


def test_names_show_the_scale_blocks_of_a_stack():
    imgs, net = pixels(3), tiny_net()
    # per-scale normalisation makes each block the single-scale descriptor itself
    est = VGGFeatures(model=net, scales=(32, 48), aggregate="stack", normalize="per_scale", **KW)
    Z = est.fit_transform(imgs)
    names = est.get_feature_names_out()
    assert names[0] == "A_fc7_q32_0" and names[32] == "A_fc7_q48_0" and names[-1] == "A_fc7_q48_31"
    for q in (32, 48):
        block = [i for i, n in enumerate(names) if n.startswith(f"A_fc7_q{q}_")]
        alone = vggfeat.extract(imgs, model=net, scales=(q,), **KW)
        np.testing.assert_allclose(Z[:, block], alone, atol=1e-5)


def test_names_show_the_blocks_of_fused_nets_and_several_layers():
    imgs, a, b = pixels(2, seed=1), tiny_net("A", 1), tiny_net("B", 2)
    est = VGGFeatures(model=(a, b), scales=(32, 48), aggregate="stack", layer=("pool5", "fc7"), **KW)
    Z = est.fit_transform(imgs)
    names = list(est.get_feature_names_out())
    assert len(names) == Z.shape[1] == 2 * 2 * 2 * 32 and len(set(names)) == len(names)
    assert names[:2] == ["A_pool5_q32_0", "A_pool5_q32_1"] and "B_fc7_q48_31" == names[-1]
    for net, other in (("A", a), ("B", b)):  # each net's fc7 block: that net alone, over sqrt(2)
        block = [i for i, n in enumerate(names) if n.startswith(f"{net}_fc7_")]
        alone = vggfeat.extract(imgs, model=other, scales=(32, 48), aggregate="stack", **KW)
        np.testing.assert_allclose(Z[:, block], alone / np.sqrt(2), atol=1e-5)
    twice = VGGFeatures(model=(a, tiny_net("A", 3)), scales=(32,), **KW).fit()
    assert twice.get_feature_names_out()[[0, 32]].tolist() == ["A0_fc7_0", "A1_fc7_0"]
