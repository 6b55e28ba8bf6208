"""Weights sources, each read into the one form :class:`Resolved` that :mod:`vggfeat.weights` loads.

Torchvision's weight enums and names (from torch's own cache, with their preprocessing), bare
``.pth`` state dicts (torchvision layout; timm's is converted, see :mod:`vggfeat.weights.layouts`), our
``.safetensors`` with JSON metadata, and the original Caffe release (``.caffemodel``, read by
:mod:`vggfeat.weights.caffe`). A file is recognised by its first bytes before torch is asked to read it,
so that anything else is refused in one sentence naming the formats read.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torchvision.models import WeightsEnum, get_weight

from ..errors import WeightsError
from ..nets.models import PAPER_CROP, TORCHVISION_NAMES, canonical_config
from ..nets.preprocess import Preprocess
from .caffe import load_caffemodel
from .layouts import to_torchvision

META_KEY = "vggfeat"
ARCH_DEFAULTS = dict(num_classes=1000, width=1.0, fc_dim=4096, batch_norm=False, crop=PAPER_CROP)


@dataclass
class Resolved:
    """A weights source in the one form the rest of the module works with."""

    state_dict: dict[str, torch.Tensor]
    arch: dict | None = None  # None: read it off the tensor shapes
    preprocess: Preprocess | None = None
    meta: dict = field(default_factory=dict)  # class names, provenance, ...
    name: str = "the given state dict"


def _offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("VGGFEAT_OFFLINE", "HF_HUB_OFFLINE")
    )


# --------------------------------------------------------------------------------- names and torchvision
def parse_name(name: str | None) -> tuple[str | None, bool | None]:
    """A configuration as users type it -> (Table-1 letter, batch norm or None if not said):
    ``"D"`` -> (D, None), ``"vgg16"`` -> (D, False), ``"vgg19_bn"`` -> (E, True)."""
    if name is None:
        return None, None
    key = str(name).lower().replace("-", "_")
    for letter, tv in TORCHVISION_NAMES.items():
        if key in (tv, f"{tv}_bn"):
            return letter, key.endswith("_bn")
    return canonical_config(name), None


def _torchvision_enum(source):

    return source if isinstance(source, WeightsEnum) else None


def _torchvision_variant(source) -> str | None:
    """The torchvision variant a string names (``"torchvision"``, ``"default"``,
    ``"torchvision:IMAGENET1K_FEATURES"``, ``"IMAGENET1K_V1"``), or None for a path."""
    if not isinstance(source, str):
        return None
    if source in ("default", "torchvision"):
        return "IMAGENET1K_V1"
    if source.startswith("torchvision:"):
        return source.split(":", 1)[1]
    if source.isupper() and source.startswith("IMAGENET") and not Path(source).suffix:
        return source
    return None


def torchvision_weights(config: str, batch_norm: bool = False, variant: str = "IMAGENET1K_V1"):
    """torchvision's weights enum member for a configuration (A/B/D/E only)."""

    config = canonical_config(config)
    if config not in TORCHVISION_NAMES:
        raise WeightsError(
            f"torchvision has no weights for VGG-{config} (no public ImageNet weights exist for "
            "A-LRN, C or B-5x5); it ships A (vgg11), B (vgg13), D (vgg16) and E (vgg19). Train it "
            "with recipes/train_imagenet.py and pass weights='that/file.safetensors', or pass "
            "weights=None for a random-feature baseline."
        )
    name = TORCHVISION_NAMES[config] + ("_bn" if batch_norm else "")
    enum = name.upper() + "_Weights"  # e.g. VGG16_BN_Weights
    try:
        return get_weight(f"{enum}.{variant}")
    except (ValueError, KeyError) as e:
        raise WeightsError(f"torchvision has no weights {enum}.{variant} ({e})") from None


def _enum_arch(w) -> tuple[str, bool]:
    """(config, batch norm) of a torchvision VGG weights enum member."""
    name = type(w).__name__.lower().removesuffix("_weights")  # vgg16_bn
    config, bn = parse_name(name) if name.startswith("vgg") else (None, None)
    if config is None:
        raise WeightsError(f"{w} are not VGG weights; pass a VGG*_Weights member")
    return config, bool(bn)


def _load_torchvision(w) -> Resolved:
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
    config, bn = _enum_arch(w)
    arch = {**ARCH_DEFAULTS, "config": config, "batch_norm": bn}
    meta = {"categories": w.meta.get("categories"), "provenance": f"torchvision {w}"}
    return Resolved(sd, arch, Preprocess.from_torchvision(w), meta, name=f"torchvision {w}")


# ----------------------------------------------------------------------------------------- files
def _read_file(path: Path) -> tuple[dict, dict]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], dict(obj.get(META_KEY) or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise WeightsError(
        f"{path} holds no state dict (found {type(obj).__name__}); expected a "
        "torchvision-layout state dict or a checkpoint saved by vggfeat"
    )


def not_weights(path) -> str:
    return (
        f"{path} is not a weights file; vggfeat reads .safetensors, torchvision/timm .pth state "
        "dicts, Caffe .caffemodel"
    )


def _looks_like_weights(path: Path) -> bool:
    """The first bytes of a file torch or safetensors can read: torch.save's zip archive, a
    legacy pickle (protocol 2+), or a safetensors header (its length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return True
    size = path.stat().st_size
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def read_weights(source) -> Resolved:
    """A local weights file (``.pth``/``.pt``, ``.safetensors``, ``.caffemodel``) -> :class:`Resolved`."""
    path = Path(source)
    if not path.exists():
        raise WeightsError(
            f"weights file {path} does not exist; pass an existing .pth, .safetensors or "
            ".caffemodel file, 'default' (ImageNet weights), or None (random weights)"
        )
    if path.suffix.lower() == ".caffemodel":
        sd, arch = load_caffemodel(path)
        return Resolved(sd, arch, Preprocess.caffe(), {"provenance": f"caffe {path.name}"}, str(path))
    if not _looks_like_weights(path):
        raise WeightsError(not_weights(path))
    try:
        sd, meta = _read_file(path)
    except WeightsError:
        raise
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # a pickle of more than tensors
            raise WeightsError(
                f"{path} holds pickled Python objects besides tensors (a whole model saved with "
                "torch.save(model)?); vggfeat reads state dicts: save model.state_dict() instead"
            ) from None
        raise WeightsError(not_weights(path)) from None
    except Exception as e:  # torch's own text advises unpickling untrusted code: first line only
        first = (str(e).splitlines() or [""])[0]
        raise WeightsError(
            f"cannot read weights file {path}: {type(e).__name__}: {first}. "
            "The file may be truncated; download it again."
        ) from None
    pre = meta.pop("preprocess", None)
    arch = meta.pop("arch", None)
    pre = Preprocess.from_dict(pre) if pre else None
    return Resolved(to_torchvision(sd, str(path)), arch and {**ARCH_DEFAULTS, **arch}, pre, meta, str(path))


def resolve(source, config: str | None = None, batch_norm: bool | None = None) -> Resolved:
    """Any weights source -> :class:`Resolved`. ``config``/``batch_norm`` pick torchvision's file
    for ``"default"``/``"torchvision"`` (D when not given)."""
    enum = _torchvision_enum(source)
    if enum is not None:
        return _load_torchvision(enum)
    variant = _torchvision_variant(source)
    if variant is not None:
        return _load_torchvision(torchvision_weights(config or "D", bool(batch_norm), variant))
    if isinstance(source, dict):
        return Resolved(to_torchvision(source))
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"weights must be None, 'default', a torchvision name or enum, a path or a state dict, "
            f"got {type(source).__name__}"
        )
    return read_weights(source)
