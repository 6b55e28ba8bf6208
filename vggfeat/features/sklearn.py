"""scikit-learn transformer: images in, appendix-B descriptors out.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.svm import LinearSVC
>>> clf = make_pipeline(VGGFeatures(cache="features/"), LinearSVC())  # doctest: +SKIP
>>> clf.fit(train_paths, y).score(test_paths, y_test)  # doctest: +SKIP

``X`` is any image collection :func:`vggfeat.extract` accepts (a list of paths is the usual).
The network is frozen (Appendix B: no fine-tuning), so ``fit`` only builds it: net D with
ImageNet weights unless told otherwise. ``layer`` may name several layers (one pass of the
net); their descriptors stand side by side. Inside a grid search over the classifier, pass
``cache=`` (a feature store keyed per image, :mod:`vggfeat.features.store`): each image is computed
once, whatever subset each fold and parameter passes.

A prebuilt network passed as ``model`` is shared, not copied, by ``clone`` (and so by
``GridSearchCV`` and ``cross_val_score``, which clone once per fold and candidate): it is frozen,
never changed by ``fit`` or ``transform``, and a deep copy of VGG-D costs 550 MB each time.

A Hugging Face ``Dataset`` goes in whole to ``fit``/``transform`` (``image_column=`` names its
image column). Cross-validation indexes ``X`` before the estimator sees it, and scikit-learn's
indexing takes a ``Dataset`` for an array (it has a ``shape``) and fails: pass its image column
instead, ``cross_val_score(pipe, ds["image"], y)`` (a lazy column that each fold decodes), or
``ds.cast_column("image", datasets.Image(decode=False))["image"]`` to have vggfeat's decoder read
the encoded bytes (the feature store's keys, as for the whole dataset). (The failure, a
``TypeError`` about ``'int' and 'ellipsis'``, comes from scikit-learn indexing the ``Dataset``
before any estimator runs, so vggfeat cannot catch it.)
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .extract import Extractor


class VGGFeatures(TransformerMixin, BaseEstimator):
    """Appendix-B VGG descriptors as a scikit-learn transformer.

    Parameters are those of :func:`vggfeat.extract`; ``model`` may also be a prebuilt
    :class:`vggfeat.VGG` (shared by clones, see the module docstring; one whose weights are random
    warns); ``image_column`` names the image column of a Hugging Face ``Dataset`` (its first Image
    column by default). Fitted attributes: ``extractor_``, ``n_features_out_``,
    ``extractor_params_`` (the parameters ``extractor_`` was built with).

    Examples
    --------
    >>> import numpy as np, vggfeat, warnings
    >>> from vggfeat.sklearn import VGGFeatures
    >>> net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=2)  # random weights: warns
    >>> imgs = [np.zeros((240, 320, 3), np.uint8), np.full((256, 256, 3), 200, np.uint8)]
    >>> with warnings.catch_warnings():  # a shape check: these features mean nothing
    ...     warnings.simplefilter("ignore")
    ...     print(VGGFeatures(model=net, scales=(224,), progress=False).fit_transform(imgs).shape)
    (2, 32)
    """

    def __init__(
        self,
        model=None,
        *,
        weights="default",
        scales=None,
        flip=None,
        aggregate="mean",
        layer="fc7",
        normalize=True,
        batch_size=None,
        device=None,
        num_workers=None,
        cache=None,
        on_error="raise",
        progress=True,
        image_column=None,
        precision="auto",
        protocol="paper",
    ):
        self.model = model
        self.weights = weights
        self.scales = scales
        self.flip = flip
        self.aggregate = aggregate
        self.layer = layer
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.cache = cache
        self.on_error = on_error
        self.progress = progress
        self.image_column = image_column
        self.precision = precision
        self.protocol = protocol

    def fit(self, X=None, y=None):
        """Build the (frozen) network; X is only checked to be images, y is not used. A refit
        with unchanged parameters keeps the extractor of the last fit (the net is frozen), so
        it neither rebuilds the net nor repeats its warnings."""
        _refuse_sparse(X)
        params = self.get_params()
        if getattr(self, "extractor_params_", None) != params:
            self.extractor_ = Extractor(**params)
            self.extractor_params_ = params
        self.n_features_out_ = self.extractor_.dim
        return self

    def transform(self, X) -> np.ndarray:
        """(N,) images -> (N, n_features_out_) float32 descriptors; several layers side by
        side, in the order given."""
        check_is_fitted(self, "extractor_")
        _refuse_sparse(X)
        rows = self.extractor_(X)
        return np.hstack([rows[n] for n in self.extractor_.layers]) if isinstance(rows, dict) else rows

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """One name per output column, showing its block: ``{net}_{layer}_q{Q}_{i}`` when the
        scales are stacked (``D_fc7_q256_0``), ``{net}_{layer}_{i}`` otherwise; fused nets
        each have their own block (``D_fc7_0`` ... ``E_fc7_0`` ...), numbered (``D0``, ``D1``)
        when the same config is fused twice."""
        check_is_fitted(self, "extractor_")
        ext = self.extractor_
        nets = [m.config for m in ext.models]
        if len(set(nets)) < len(nets):
            nets = [f"{c}{k}" for k, c in enumerate(nets)]
        qs = [f"_q{q}" for q in ext.scales] if ext.aggregate == "stack" else [""]
        names = [
            f"{net}_{layer}{q}_{i}"
            for layer in ext.layers
            for net, width in zip(nets, ext.widths[layer])
            for q in qs
            for i in range(width // len(qs))
        ]
        return np.array(names, dtype=object)

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.two_d_array = False  # images, not a feature matrix
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # descriptors are float32 whatever comes in
        return tags

    def __sklearn_clone__(self):
        """scikit-learn's clone, but a prebuilt network (``model``) is shared, not deep-copied:
        the clone of a shallow copy whose ``model`` is None, then the network put back."""
        proxy = copy.copy(self)
        proxy.model = None
        new = super(VGGFeatures, proxy).__sklearn_clone__()
        new.model = self.model
        return new


def _refuse_sparse(X) -> None:
    # by the type's module: importing scipy here would make it a dependency of its own
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"VGGFeatures takes images, not a sparse matrix ({type(X).__name__}); pass image "
            "paths, arrays, PIL images or a Hugging Face Dataset"
        )
