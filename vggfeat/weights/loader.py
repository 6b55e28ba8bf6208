"""Weights I/O, and :func:`vgg`, the builder that puts a model and its weights together.

Every source resolves to one form, :class:`Resolved`: a state dict in torchvision's layout, the
architecture it holds (where the source says or the tensor shapes show), and the preprocessing
the weights were trained with; the model carries that preprocessing as ``model.preprocess``.

Sources: ``"default"`` (the paper's network with ImageNet weights: torchvision's IMAGENET1K_V1),
torchvision's weight enums and names (``"torchvision"``, ``"IMAGENET1K_V1"``,
``VGG16_Weights.IMAGENET1K_V1``; their own cache), bare ``.pth`` state dicts (torchvision layout,
ImageNet normalisation; timm's VGG layout is converted, see :mod:`vggfeat.weights.layouts`), our
``.safetensors`` with JSON metadata (architecture, preprocessing, class names, provenance), and
the original Caffe release (``.caffemodel``), each read by :mod:`vggfeat.weights.sources`.
Nothing is overridden silently: an architecture argument that contradicts the weights is an
error, except ``num_classes``, which (as in timm) keeps every layer but fc8 and gives fc8 a fresh
init.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigMismatch, WeightsError
from ..files import atomic_path, os_errno
from ..nets.featuremaps import FeatureMaps, features_net
from ..nets.models import VGG, scaled
from ..nets.preprocess import Preprocess
from ..nets.timm_conventions import pretrained_cfg, timm_keywords
from .layouts import conv_widths, infer_arch
from .sources import (
    ARCH_DEFAULTS,
    META_KEY,
    Resolved,
    parse_name,
    resolve,
)

log = logging.getLogger("vggfeat")
__all__ = [
    "vgg",
    "load_weights",
    "save_weights",
    "fingerprint",
    "parse_name",
]


# ---------------------------------------------------------------------------------------- loading
def load_weights(model: VGG, source, *, preprocess=None) -> VGG:
    """Load weights from ``source`` into ``model`` (strict) and set ``model.preprocess`` to the
    weights' preprocessing (``preprocess`` overrides it: ``"caffe"``, ``"imagenet"`` or a
    :class:`Preprocess`, e.g. for PyTorch conversions of the Caffe release)."""
    res = resolve(source, model.config, model.arch["batch_norm"])
    return _apply(model, res, preprocess)


def _apply(model: VGG, res: Resolved, preprocess) -> VGG:
    _load_state_dict(model, res.state_dict, res.name, assign=next(model.parameters()).is_meta)
    pre = preprocess or res.preprocess
    model.preprocess = Preprocess.named(pre) if isinstance(pre, str) else pre or Preprocess.imagenet()
    model.meta = dict(res.meta)
    if str(res.meta.get("provenance", "")).startswith("caffe "):  # the authors' release, as read:
        # its fingerprint travels with conversions, and tells a fine-tuned copy from the release
        model.meta.setdefault("release_fingerprint", fingerprint(model))
    model.pretrained_cfg = pretrained_cfg(model, source=res.name, provenance=res.meta.get("provenance"))
    return model


def _load_state_dict(model: nn.Module, sd: dict, source, assign: bool = False) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"missing keys {missing[:8]}" * bool(missing),
            f"unexpected keys {unexpected[:8]}" * bool(unexpected),
            f"shape mismatches {wrong[:8]}" * bool(wrong),
        ]
        arch = getattr(model, "arch", {})
        raise WeightsError(
            f"weights {source} do not fit VGG {arch}: "
            + "; ".join(p for p in parts if p)
            + ". Check config, width, fc_dim, num_classes and batch_norm."
        )
    if assign:  # built on the meta device: take the tensors, as the model's (float32) dtype
        sd = {
            k: v.detach().to(own[k].dtype, copy=True) if v.dtype.is_floating_point else v
            for k, v in sd.items()
        }
    model.load_state_dict(sd, strict=True, assign=assign)


def _check_agrees(arch: dict, given: dict, what: str) -> None:
    """An architecture argument the caller gave must be what the weights hold."""
    for key, value in given.items():
        if key == "num_classes" or value is None:
            continue
        held = arch[key]
        if key == "width":  # two factors that round to the same channels are the same net
            same = all(scaled(b, value) == scaled(b, held) for b in conv_widths(arch["config"]))
        else:
            same = value == held
        if not same:
            raise WeightsError(
                f"{what} hold a VGG with {key}={held!r}, but {key}={value!r} was asked for; pass "
                f"{key}={held!r} or leave it out (None reads it from the weights)"
            )


def vgg(
    config: str | None = None,
    *,
    weights=None,
    num_classes: int | None = None,
    width: float | None = None,
    fc_dim: int | None = None,
    dropout: float = 0.5,
    batch_norm: bool | None = None,
    init: str = "glorot",
    std: float = 0.01,
    crop: int | None = None,
    preprocess: str | Preprocess | None = None,
    features_only: bool = False,
    out_indices=None,
    **create_model_kwargs,
) -> VGG | FeatureMaps:
    """Build a Table-1 network, random unless ``weights`` are given (torchvision's convention).

    ``config``: a letter of Table 1 (``"A"`` ... ``"E"``, ``"A-LRN"``, ``"B-5x5"``) or a
    torchvision name (``"vgg16"``, ``"vgg19_bn"``); D by default, or what a weights file says.
    ``weights``: None (random init), ``"default"`` (ImageNet weights of the paper's net:
    torchvision's IMAGENET1K_V1, the ``_bn`` file with ``batch_norm=True``), a torchvision variant
    (``"IMAGENET1K_V1"``, ``"torchvision:IMAGENET1K_FEATURES"``) or enum member
    (``VGG16_Weights.IMAGENET1K_V1``), or a file: ``.pth``/``.pt`` (a bare torchvision-layout state
    dict or our checkpoint), ``.safetensors`` written by :func:`save_weights` (rebuilds the
    architecture from its metadata), or a Caffe ``.caffemodel`` of the original release.

    Architecture arguments left as None are read from the weights (or take the paper's values:
    1000 classes, width 1, fc 4096, no batch norm, crop 224). Given ones must agree with the
    weights, else :class:`WeightsError` names both values; ``num_classes`` differing from the
    weights keeps every layer but fc8 and initialises a new fc8 (timm's convention), logged.
    ``crop``: the training crop c; fc6's kernel is c/32. ``preprocess`` overrides the
    preprocessing the weights carry (``"imagenet"``, ``"caffe"`` or a :class:`Preprocess`).
    ``features_only``: timm's convention, a :class:`~vggfeat.nets.featuremaps.FeatureMaps` whose forward
    returns the maps ``out_indices`` name (timm's stages 0..5 by default, or layer names) as a
    list, described by its ``feature_info``. timm's ``create_model`` keywords ``pretrained``,
    ``drop_rate``, ``global_pool``, ``in_chans``, ``device``, ``dtype``, ``feature_cls``,
    ``pretrained_cfg(_overlay)`` and ``cache_dir`` keep timm's meaning or are refused
    (:func:`vggfeat.nets.timm_conventions.timm_keywords`), so a timm registry entry that
    forwards its keywords here passes timm's own model tests.
    """
    kw = timm_keywords(create_model_kwargs, weights=weights, dropout=dropout)
    weights, dropout = kw.weights, kw.dropout
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects the outputs of features_only=True; pass that too")
    config, named_bn = parse_name(config)
    if named_bn is not None and batch_norm is not None and named_bn != batch_norm:
        raise ValueError(f"the name says batch_norm={named_bn} but batch_norm={batch_norm} was passed")
    batch_norm = named_bn if batch_norm is None else batch_norm
    given = dict(num_classes=num_classes, width=width, fc_dim=fc_dim, batch_norm=batch_norm, crop=crop)
    if weights is None:
        arch = {**ARCH_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        pre = Preprocess.named(preprocess) if isinstance(preprocess, str) else preprocess
        with torch.device(kw.device) if kw.device is not None else nullcontext():  # no copy
            model = VGG(config or "D", dropout=dropout, init=init, std=std, preprocess=pre, **arch)
    else:
        res = resolve(weights, config, batch_norm)
        model = _with_weights(res, config, given, dropout=dropout, init=init, std=std, preprocess=preprocess)
    if kw.device is not None or kw.dtype is not None:
        model.to(device=kw.device, dtype=kw.dtype)
    model.global_pool = kw.global_pool
    model.pretrained_cfg = type(model.pretrained_cfg)({**model.pretrained_cfg, **kw.cfg_overlay})
    if features_only:
        return features_net(model, out_indices, kw.feature_cls)
    if kw.feature_cls is not None:
        raise ValueError("feature_cls picks the net of features_only=True; pass that too")
    return model


def _with_weights(res: Resolved, config, given: dict, *, dropout, init, std, preprocess) -> VGG:
    """The model ``res`` holds; ``given``: the architecture arguments the caller passed. Tensors
    or metadata that make no Table-1 net (a damaged file) are a :class:`WeightsError` naming it."""
    try:
        arch = res.arch or infer_arch(res.state_dict, given["width"])
        if config is not None and config != arch["config"]:
            raise ConfigMismatch(res.name, arch["config"], config)
        _check_agrees(arch, given, f"weights {res.name}")
        with torch.device("meta"):  # no random init of tensors about to be replaced
            model = VGG(dropout=dropout, **arch)
        _apply(model, res, preprocess)
    except WeightsError as e:
        if isinstance(e, ConfigMismatch) or str(res.name) in str(e):
            raise
        raise WeightsError(f"weights {res.name}: {e}") from None
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError, AttributeError) as e:
        raise WeightsError(
            f"weights {res.name} hold no usable VGG ({type(e).__name__}: {str(e)[:200]}); the file "
            "may be damaged: download or convert it again"
        ) from None
    num_classes = given["num_classes"]
    if num_classes is not None and num_classes != arch["num_classes"]:
        # timm's num_classes convention: a fresh fc8 for a new task on top of loaded weights
        model.reset_classifier(num_classes, init=init, std=std)
        log.info(
            "VGG-%s: loaded %s except fc8 (%d classes); fc8 re-initialised for %d classes",
            model.config,
            res.name,
            arch["num_classes"],
            num_classes,
        )
    return model


def save_weights(model: VGG, path, **meta) -> Path:
    """Write ``model`` as safetensors with JSON metadata (architecture, preprocessing, and any
    ``meta`` such as class names or provenance), atomically. :func:`vgg` rebuilds the same model
    from the file alone; torchvision's VGG loads its tensors (A/B/D/E at crop 224)."""

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes .safetensors files, got {path}")
    info = {
        **getattr(model, "meta", {}),
        **meta,
        "arch": model.arch,
        "preprocess": model.preprocess.to_dict(),
    }
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    need = sum(v.numel() * v.element_size() for v in sd.values()) + 65536
    with atomic_path(path, need=need) as tmp:  # temporary, fsync, rename: never half a file
        try:
            save_file(sd, str(tmp), metadata={META_KEY: json.dumps(info, default=str)})
        except Exception as e:  # safetensors' own error type: an I/O error is told by its text
            code = os_errno(OSError(str(e)))
            if code is None:
                raise
            raise OSError(code, str(e)) from None
        # safetensors creates its file 0600 whatever the umask: give it the mode open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    return path


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over the parameters, buffers and preprocessing: the identity of a model's output."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    pre = getattr(model, "preprocess", None)
    h.update(json.dumps(pre.to_dict() if pre else None, sort_keys=True).encode())
    return h.hexdigest()[:16]
