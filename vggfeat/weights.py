"""Weights I/O. Every source yields a state dict in torchvision's layout plus the preprocessing the
weights were trained with; the model carries that preprocessing as ``model.preprocess``.

Sources: torchvision's weight enums (their own cache), bare ``.pth`` state dicts (torchvision
layout, ImageNet normalisation), our ``.safetensors`` with JSON metadata (architecture,
preprocessing, class names, provenance), and the original Caffe release (``.caffemodel``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .models import CONFIGS, TORCHVISION_NAMES, VGG, _canonical
from .preprocess import Preprocess

log = logging.getLogger("vggfeat")
META_KEY = "vggfeat"


class WeightsError(ValueError):
    """A weights file or name that cannot be used; the message says which and why."""


def _offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("VGGFEAT_OFFLINE", "HF_HUB_OFFLINE")
    )


def torchvision_weights(config: str, batch_norm: bool = False, variant: str = "IMAGENET1K_V1"):
    """torchvision's weights enum member for a configuration (A/B/D/E only)."""
    from torchvision.models import get_weight

    config = _canonical(config)
    if config not in TORCHVISION_NAMES:
        raise WeightsError(
            f"torchvision has no weights for VGG-{config}; it ships A (vgg11), "
            "B (vgg13), D (vgg16) and E (vgg19). Train it with "
            "recipes/train_imagenet.py or load a local file."
        )
    name = TORCHVISION_NAMES[config] + ("_bn" if batch_norm else "")
    enum = name.upper() + "_Weights"  # e.g. VGG16_BN_Weights
    try:
        return get_weight(f"{enum}.{variant}")
    except (ValueError, KeyError) as e:
        raise WeightsError(f"torchvision has no weights {enum}.{variant} ({e})") from None


def _load_torchvision(config: str, batch_norm: bool, variant: str):
    w = torchvision_weights(config, batch_norm, variant)
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    fname = ckpt_dir / os.path.basename(w.url)
    if not fname.exists() and _offline():
        raise WeightsError(
            f"torchvision weights {w} are not cached and downloads are off (offline). Put the "
            f"file {fname.name} (from {w.url}) into {ckpt_dir}, or set TORCH_HOME to a folder "
            "whose hub/checkpoints/ holds it."
        )
    try:
        sd = w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network errors come in many types
        raise WeightsError(
            f"could not load torchvision weights {w}: {e}. Without internet, put the file "
            f"{fname.name} into {ckpt_dir}."
        ) from e
    return sd, {
        "preprocess": Preprocess.from_torchvision(w).to_dict(),
        "categories": w.meta.get("categories"),
        "provenance": f"torchvision {w}",
    }


def read_weights(source) -> tuple[dict[str, torch.Tensor], dict]:
    """A local weights file -> (torchvision-layout state dict, metadata dict possibly empty)."""
    path = Path(source)
    if not path.exists():
        raise WeightsError(
            f"weights file {path} does not exist; pass an existing .pth, "
            ".safetensors or .caffemodel file, 'torchvision', or None"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
                sd = {k: f.get_tensor(k) for k in f.keys()}
            return sd, meta
        if suffix == ".caffemodel":
            from .caffe import read_caffemodel

            return read_caffemodel(path), {
                "preprocess": Preprocess.caffe().to_dict(),
                "provenance": f"caffe {path.name}",
            }
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(
            f"cannot read weights file {path}: {type(e).__name__}: {e}. The file "
            "may be truncated or not a weights file; download it again."
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], dict(obj.get(META_KEY) or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise WeightsError(
        f"{path} holds no state dict (found {type(obj).__name__}); expected a "
        "torchvision-layout state dict or a checkpoint saved by vggfeat"
    )


def infer_arch(sd: dict[str, torch.Tensor]) -> dict:
    """Read config, width, fc_dim, num_classes and batch norm off a torchvision-layout state dict."""
    convs = sorted(
        {
            int(k.split(".")[1])
            for k in sd
            if k.startswith("features.") and k.endswith(".weight") and sd[k].ndim == 4
        }
    )
    if not convs or "classifier.6.weight" not in sd:
        raise WeightsError("state dict is not in torchvision's VGG layout (features.N.*, classifier.0/3/6.*)")
    shapes = [(sd[f"features.{i}.weight"].shape[-1], sd[f"features.{i}.weight"].shape[0]) for i in convs]
    width = shapes[0][1] / 64
    bn = any(k.endswith("running_mean") for k in sd)
    # A and A-LRN have the same convs; A-LRN's LRN module shifts the index of the second conv
    lrn = len(convs) > 1 and convs[1] - convs[0] == (5 if bn else 4)
    for name, blocks in CONFIGS.items():
        spec = [s if isinstance(s, tuple) else (3, s) for b in blocks for s in b if s != "LRN"]
        has_lrn = any(s == "LRN" for b in blocks for s in b)
        if has_lrn == lrn and [k for k, _ in spec] == [k for k, _ in shapes]:
            return dict(
                config=name,
                width=width,
                fc_dim=sd["classifier.0.weight"].shape[0],
                num_classes=sd["classifier.6.weight"].shape[0],
                batch_norm=bn,
            )
    raise WeightsError(f"no VGG configuration has conv kernels/widths {shapes}")


def _is_caffe(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".caffemodel"


def _is_torchvision(source) -> bool:
    return isinstance(source, str) and source.startswith("torchvision")


def _resolve(source, config: str | None = None, batch_norm: bool = False):
    """Any weights source -> (state dict, or Caffe layers for a .caffemodel; metadata)."""
    if _is_torchvision(source):
        if config is None:
            raise ValueError("config is required for weights='torchvision' (A, B, D or E)")
        variant = source.split(":", 1)[1] if ":" in source else "IMAGENET1K_V1"
        return _load_torchvision(config, batch_norm, variant)
    if isinstance(source, dict):
        return source, {}
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"weights must be None, 'torchvision', a path or a state dict, got {type(source)}")
    return read_weights(source)


def load_weights(model: VGG, source, *, preprocess=None) -> VGG:
    """Load weights from ``source`` into ``model`` (strict) and set ``model.preprocess`` to the
    weights' preprocessing (``preprocess`` overrides it: ``"caffe"``, ``"imagenet"`` or a
    :class:`Preprocess`, e.g. for PyTorch conversions of the Caffe release)."""
    sd, meta = _resolve(source, model.config, model.arch["batch_norm"])
    return _apply(model, sd, meta, source, preprocess)


def _apply(model: VGG, sd, meta: dict, source, preprocess) -> VGG:
    if _is_caffe(source):
        from .caffe import caffe_to_state_dict

        sd = caffe_to_state_dict(sd, model, source=source)
    name = "the given state dict" if isinstance(source, dict) else source
    _load_state_dict(model, sd, name, assign=next(model.parameters()).is_meta)
    pre = preprocess or meta.get("preprocess")
    if isinstance(pre, str):
        pre = Preprocess.named(pre)
    elif isinstance(pre, dict):
        pre = Preprocess.from_dict(pre)
    model.preprocess = pre or Preprocess.imagenet()
    model.meta = {k: v for k, v in meta.items() if k != "preprocess"}
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
    if assign:  # the model was built on the meta device: take the tensors, in float32 layout
        sd = {k: v.detach().clone() if v.dtype.is_floating_point else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=assign)


def build_with_weights(config, weights, *, preprocess=None, **kw) -> VGG:
    """Build a model for ``weights`` (see :func:`vggfeat.vgg`). The architecture comes from the
    file (metadata, tensor shapes, Caffe layer count) where it says, else from the arguments."""
    if weights is None:
        config = config or "D"
        pre = Preprocess.named(preprocess) if isinstance(preprocess, str) else preprocess
        return VGG(config, preprocess=pre, **kw)
    sd, meta = _resolve(weights, config, kw.get("batch_norm", False))
    if _is_caffe(weights):
        from .caffe import infer_caffe_arch

        arch = infer_caffe_arch(sd)
    else:
        arch = meta.get("arch") or infer_arch(sd)
    kw.update({k: arch[k] for k in ("num_classes", "width", "fc_dim", "batch_norm") if k in arch})
    if config is not None and _canonical(config) != arch["config"]:
        what = "the state dict" if isinstance(weights, dict) else f"weights {weights}"
        raise WeightsError(
            f"{what} are for VGG-{arch['config']}, not VGG-{_canonical(config)}; pass "
            f"config={arch['config']!r} or None"
        )
    with torch.device("meta"):  # no random init of tensors about to be replaced
        model = VGG(arch["config"], **kw)
    return _apply(model, sd, meta, weights, preprocess)


def save_weights(model: VGG, path, **meta) -> Path:
    """Write ``model`` as safetensors with JSON metadata (architecture, preprocessing, and any
    ``meta`` such as class names or provenance), atomically. :func:`vggfeat.vgg` rebuilds the
    same model from the file alone; torchvision's VGG loads its tensors (A/B/D/E)."""
    from safetensors.torch import save_file

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={META_KEY: json.dumps(info, default=str)})
    os.replace(tmp, path)
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
