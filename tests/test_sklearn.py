"""VGGFeatures: scikit-learn's estimator checks that apply to an image transformer, pipelines and
grid search, feature names that show their blocks (checked against single-scale and single-net
extracts). Tiny nets (crop 32) on small images."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import check_estimator

import vggfeat
from vggfeat.features.sklearn import VGGFeatures


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
    "check_complex_data": NO_DATA,
    "check_estimators_empty_data_messages": NO_DATA,
    "check_estimators_nan_inf": (
        "an image holding NaN or inf is not refused yet: the decoder's check of non-finite pixels "
        "is the companion issue on inputs (data.py)"
    ),
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
        len(passed) >= 27
        and {
            "check_fit_idempotent",
            "check_estimators_pickle",
            "check_set_params",
            "check_transformer_preserve_dtypes",  # preserves_dtype: float32 only
            "check_estimator_sparse_tag",  # sparse=False, and a sparse matrix is refused
        }
        <= passed
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
    cloned = clone(feats)
    assert not hasattr(cloned, "extractor_") and cloned.model is m  # the frozen network is shared
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


def two_classes():
    """Two visually distinct classes, dark and bright images of a few widths."""
    imgs = [np.full((32, 32 + i, 3), 20 + 3 * i, np.uint8) for i in range(6)]
    imgs += [np.full((32, 32 + i, 3), 230 - 3 * i, np.uint8) for i in range(6)]
    return imgs, np.array([0] * 6 + [1] * 6)


def test_clones_share_the_network_and_copy_the_rest():
    net, scales = tiny_net(), [32]
    est = VGGFeatures(model=net, scales=scales, **KW).set_output(transform="default")
    twin = clone(est)
    assert twin.model is net and twin.scales == scales and twin.scales is not scales
    assert twin.get_params() == {**est.get_params(), "scales": scales}
    fused = clone(VGGFeatures(model=(net, tiny_net("B"))))
    assert fused.model[0] is net
    imgs, y = two_classes()
    pipe = make_pipeline(VGGFeatures(model=net, scales=(32,), **KW), LinearSVC())
    res = cross_validate(pipe, imgs, y, cv=3, return_estimator=True)
    assert all(p[0].model is net for p in res["estimator"])  # no fold got its own copy
    assert vggfeat.fingerprint(net) == vggfeat.fingerprint(tiny_net())  # and none changed it


def test_a_sparse_matrix_is_refused_by_name():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="not a sparse matrix"):
        VGGFeatures(model=tiny_net(), **KW).fit(sparse.csr_array(np.eye(3)))


def image_ds(imgs, y):
    photos = [Image.fromarray(255 - a) for a in imgs]  # another image column, listed first
    ds = datasets.Dataset.from_dict({"thumb": photos, "image": [Image.fromarray(a) for a in imgs], "y": y})
    return ds.cast_column("thumb", datasets.Image()).cast_column("image", datasets.Image())


def test_image_column_of_a_hugging_face_dataset():
    imgs, y = two_classes()
    ds, net = image_ds(imgs, y.tolist()), tiny_net()
    want = vggfeat.extract(imgs, model=net, scales=(32,), **KW)
    est = VGGFeatures(model=net, scales=(32,), image_column="image", **KW)
    assert est.get_params()["image_column"] == "image"
    np.testing.assert_allclose(est.fit_transform(ds), want, atol=1e-6)
    first = VGGFeatures(model=net, scales=(32,), **KW).fit_transform(ds)  # the first Image column
    np.testing.assert_allclose(first, vggfeat.extract([255 - a for a in imgs], model=net, scales=(32,), **KW))


def test_cross_val_score_on_a_hugging_face_dataset_through_its_image_column():
    imgs, y = two_classes()
    ds, net = image_ds(imgs, y.tolist()), tiny_net()
    pipe = make_pipeline(VGGFeatures(model=net, scales=(32,), **KW), LinearSVC())
    with pytest.raises(TypeError):  # scikit-learn indexes a Dataset as an array, and fails
        cross_val_score(pipe, ds, y, cv=3)
    want = cross_val_score(pipe, imgs, y, cv=3)
    np.testing.assert_allclose(cross_val_score(pipe, ds["image"], y, cv=3), want)  # the documented idiom
    raw = ds.cast_column("image", datasets.Image(decode=False))["image"]
    np.testing.assert_allclose(cross_val_score(pipe, raw, y, cv=3), want)
