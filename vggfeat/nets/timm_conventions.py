"""timm's model conventions that are not about feature maps (those are in
:mod:`vggfeat.nets.featuremaps`): the ``pretrained_cfg`` record timm's data functions read, the
``global_pool`` argument, and ``create_model``'s keywords, each with timm's meaning or refused in
one sentence that gives vggfeat's equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import GlobalPoolError

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
        pool_size=(model.kernel, model.kernel),  # the pool5 map of a crop: forward_features' output
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


class TimmConfig:
    """timm's old name of ``pretrained_cfg``, ``default_cfg``, for the nets and their
    ``features_only`` view."""

    @property
    def default_cfg(self) -> dict:
        """timm's old name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg


def check_global_pool(global_pool: str | None) -> str:
    """timm's ``global_pool`` -> ``"avg"`` or ``""``.

    ``forward`` takes crops whose fc7 map is 1x1 (torchvision's adaptive pool makes it so at
    any size), so timm's default ``"avg"`` (None) is what it does. ``""`` is timm's "no pooling":
    at the paper's geometry fc6's kernel spans the crop's whole pool5 map, so fc6 is this net's
    spatial aggregation, and without pooling the head (fc6, fc7, fc8) is bypassed: ``forward``
    returns the unpooled pool5 map (N, C5, H/32, W/32), of ``pretrained_cfg["pool_size"]`` at
    the crop, as timm's models without pooling return their unpooled features. (timm's own VGG
    runs fc6/fc7 as convolutions first and returns the fc7 map, 1x1 at the crop, and timm's
    tests exempt it; that map is ``model.dense()(x, "fc7")`` here.) Another pooling has
    nothing to pool and is refused with :class:`GlobalPoolError`."""
    if global_pool is None or global_pool == "avg":
        return "avg"
    if global_pool == "":
        return ""
    raise GlobalPoolError(
        f"global_pool={global_pool!r}: VGG's forward pools nothing (its fc7 map is 1x1); pass 'avg' "
        "(the default) or '' (forward returns the pool5 map); for another pooling of whole images "
        "pool model.dense()(x, layer='fc7'), e.g. .amax((2, 3))"
    )


# timm's pretrained tags of the weights pretrained=True loads: torchvision's IMAGENET1K_V1, the
# file timm's own vgg*.tv_in1k entries hold too
TAGS = ("", "tv_in1k")


@dataclass
class CreateModelKeywords:
    """What :func:`timm_keywords` reads from timm's ``create_model`` keywords."""

    weights: object
    dropout: float
    global_pool: str = "avg"
    device: object = None
    dtype: torch.dtype | None = None
    feature_cls: object = None
    cfg_overlay: dict = field(default_factory=dict)


def timm_keywords(kwargs: dict, *, weights, dropout: float) -> CreateModelKeywords:
    """timm's ``create_model`` keywords for :func:`vggfeat.vgg`, with timm's meanings.

    ``pretrained=True`` means ``weights="default"``; ``drop_rate`` is the dropout after fc6 and
    fc7 (where timm's VGG puts it); ``global_pool`` is checked by :func:`check_global_pool`;
    ``in_chans`` must be 3 (the weights' preprocessing is per RGB channel); ``device`` and
    ``dtype`` place the parameters (``device="meta"``: shapes only, nothing allocated);
    ``feature_cls`` picks the ``features_only`` wrapper
    (:func:`vggfeat.nets.featuremaps.features_net`); ``pretrained_cfg`` and
    ``pretrained_cfg_overlay`` (dicts) update ``model.pretrained_cfg``; ``cache_dir`` None."""
    kwargs = dict(kwargs)
    pretrained = kwargs.pop("pretrained", None)
    drop_rate = kwargs.pop("drop_rate", None)
    in_chans = kwargs.pop("in_chans", 3)
    out = CreateModelKeywords(weights, dropout, check_global_pool(kwargs.pop("global_pool", None)))
    out.device, out.dtype = kwargs.pop("device", None), _dtype(kwargs.pop("dtype", None))
    out.feature_cls = kwargs.pop("feature_cls", None)
    for key in ("pretrained_cfg", "pretrained_cfg_overlay"):
        cfg = kwargs.pop(key, None)
        if key == "pretrained_cfg" and isinstance(cfg, str):  # timm's tag, from a name "vgg16.tv_in1k"
            if cfg not in TAGS:
                raise ValueError(
                    f"pretrained tag {cfg!r}: vggfeat's ImageNet weights are tagged {sorted(TAGS)}"
                )
            cfg = {"tag": cfg} if cfg else {}
        if cfg is not None and not isinstance(cfg, dict):
            raise ValueError(f"{key}={cfg!r}: vggfeat takes a dict here; choose weights with weights=...")
        out.cfg_overlay.update(cfg or {})
    if kwargs.pop("cache_dir", None) is not None:
        raise ValueError("cache_dir: vggfeat downloads into torchvision's cache; set TORCH_HOME instead")
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
        out.weights = weights if weights is not None else ("default" if pretrained else None)
    if drop_rate is not None:
        if dropout not in (0.5, drop_rate):
            raise ValueError(f"drop_rate={drop_rate} and dropout={dropout} disagree; pass one of them")
        out.dropout = drop_rate
    return out


def _dtype(dtype) -> torch.dtype | None:
    """A torch dtype, or its name (``"bfloat16"``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ValueError(f"dtype={dtype!r}: pass a torch dtype such as torch.float32 or its name 'float32'")
