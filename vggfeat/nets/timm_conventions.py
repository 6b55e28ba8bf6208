"""timm's model conventions that are not about feature maps (those are in
:mod:`vggfeat.nets.featuremaps`): the ``pretrained_cfg`` record timm's data functions read, the
``global_pool`` argument, and ``create_model``'s keywords, each with timm's meaning or refused in
one sentence that gives vggfeat's equivalent.
"""

from __future__ import annotations

from torch import nn

# Sec. 3.2: the smallest test scale Q = 256 at the paper's crop 224, torchvision's eval resize
CROP_PCT = 224 / 256


class BGRConfig(dict):
    """The ``pretrained_cfg`` of weights that take BGR input (the Caffe release). timm's
    ``resolve_data_config`` and ``create_transform`` would apply its mean and std to RGB images
    without a word, and no per-channel normalisation can swap channels, so reading ``mean`` or
    ``std`` raises; the values stay under ``bgr_mean`` and ``bgr_std``."""

    def __getitem__(self, key):
        if key in ("mean", "std"):
            raise ValueError(
                f"these weights ({self.get('source')}) take BGR input: a per-channel {key} applied "
                "to RGB images (as timm's resolve_data_config/create_transform would) gives wrong "
                "features; preprocess with model.preprocess (vggfeat.extract does), or read bgr_mean/bgr_std"
            )
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in ("mean", "std") or key in self else default


def pretrained_cfg(model: nn.Module, *, source: str | None = None, provenance: str | None = None) -> dict:
    """timm's ``pretrained_cfg`` record of what a model's weights expect: input size and crop,
    mean/std in [0, 1] pixel units, the class count, and where the weights came from (``source``
    None: random init). For BGR weights (the Caffe release) a :class:`BGRConfig`, which timm's
    data functions cannot misread."""
    pre = model.preprocess
    cfg = dict(
        source=source,
        provenance=provenance,
        num_classes=model.num_classes,
        input_size=(3, model.crop, model.crop),
        crop=model.crop,
        crop_pct=CROP_PCT,
        interpolation="bilinear",
        mean=tuple(m / pre.value_range for m in pre.mean),
        std=tuple(s / pre.value_range for s in pre.std),
        channel_order=pre.channel_order,
        preprocess=pre.name,
        first_conv="features.0",
        classifier="classifier.6",
    )
    if pre.channel_order == "RGB":
        return cfg
    cfg["bgr_mean"], cfg["bgr_std"] = cfg.pop("mean"), cfg.pop("std")
    return BGRConfig(cfg)


def check_global_pool(global_pool: str | None) -> None:
    """timm's ``global_pool`` pools the fc7 map before fc8. ``forward`` takes crops whose fc7
    map is 1x1 (torchvision's adaptive pool makes it so at any size), so timm's default "avg"
    is what it does; another pooling has nothing to pool."""
    if global_pool not in (None, "avg"):
        raise ValueError(
            f"global_pool={global_pool!r}: VGG's forward pools nothing (its fc7 map is 1x1); for "
            "another pooling of whole images pool model.dense()(x, layer='fc7'), e.g. .amax((2, 3))"
        )


def timm_keywords(kwargs: dict, *, weights, dropout: float) -> tuple:
    """timm's ``create_model`` keywords for :func:`vggfeat.vgg` -> its (weights, dropout).

    ``pretrained=True`` means ``weights="default"``; ``drop_rate`` is the dropout after fc6 and
    fc7 (where timm's VGG puts it); ``global_pool`` is checked by :func:`check_global_pool`;
    ``in_chans`` must be 3 (the weights' preprocessing is per RGB channel)."""
    kwargs = dict(kwargs)
    pretrained = kwargs.pop("pretrained", None)
    drop_rate = kwargs.pop("drop_rate", None)
    in_chans = kwargs.pop("in_chans", 3)
    check_global_pool(kwargs.pop("global_pool", None))
    if kwargs:
        raise TypeError(f"vgg() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if in_chans != 3:
        raise ValueError(
            f"in_chans={in_chans!r}: VGG takes RGB images (3 channels); convert the images to RGB "
            "(vggfeat.extract does, a grayscale channel repeated three times)"
        )
    if pretrained is not None:
        if weights is not None and bool(pretrained) != (weights is not None):
            raise ValueError(f"pretrained={pretrained!r} contradicts weights={weights!r}; pass one of them")
        weights = weights if weights is not None else ("default" if pretrained else None)
    if drop_rate is not None:
        if dropout not in (0.5, drop_rate):
            raise ValueError(f"drop_rate={drop_rate} and dropout={dropout} disagree; pass one of them")
        dropout = drop_rate
    return weights, dropout
