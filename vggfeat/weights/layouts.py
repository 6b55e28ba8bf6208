"""State-dict layouts: other libraries' converted to torchvision's at the edge, and the
architecture read off a state dict in torchvision's layout (:func:`infer_arch`).

Everything past :func:`to_torchvision` sees one layout: torchvision's VGG (``features.N``,
``classifier.0/3/6`` as Linear layers). Converted here:

- timm's ``features_only`` VGG: ``features_N.`` for ``features.N.``;
- wrapped models: ``torch.compile`` (``_orig_mod.``) and DataParallel/DDP (``module.``) prefixes;
- timm's VGG (``timm/models/vgg.py``): the same ``features.N``, but its head is a ``ConvMlp``,
  ``pre_logits.fc1`` (a k x k conv, k = 7 at crop 224, weight (fc_dim, C5, k, k)) and
  ``pre_logits.fc2`` (a 1x1 conv, (fc_dim, fc_dim, 1, 1)), then ``head.fc``, a Linear
  (num_classes, fc_dim). timm made its file from torchvision's by reshaping the Linear weights
  to conv kernels; flattening them back (C5, k, k order, as ``torch.flatten`` of the pool5 map)
  gives torchvision's tensors exactly.

Headless checkpoints (``num_classes=0``: timm's, whose ``head.fc`` is an Identity, and ours,
whose fc8 is one) have no fc8 tensors: they are read as nets with 0 classes.
"""

from __future__ import annotations

import logging
import math

import torch

from ..errors import WeightsError
from ..nets.featuremaps import from_timm_features_only
from ..nets.models import CONFIGS, canonical_config, scaled

log = logging.getLogger("vggfeat")
# Keys of a state dict saved from a wrapped model: torch.compile and DataParallel/DDP.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
TIMM_HEAD = {
    "pre_logits.fc1.": "classifier.0.",
    "pre_logits.fc2.": "classifier.3.",
    "head.fc.": "classifier.6.",
}


def strip_wrappers(sd: dict) -> dict:
    """Keys of a compiled (``_orig_mod.``) or DDP-wrapped (``module.``) model, unwrapped."""
    for prefix in WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def is_timm(sd: dict) -> bool:
    return any(k.startswith("pre_logits.") for k in sd)


def from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's VGG state dict -> torchvision's: head keys renamed, conv kernels flattened to Linear."""
    out = {}
    for key, value in sd.items():
        prefix = next((p for p in TIMM_HEAD if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
            continue
        key = TIMM_HEAD[prefix] + key[len(prefix) :]
        out[key] = value.flatten(1) if key.endswith(".weight") and value.ndim == 4 else value
    return out


def to_torchvision(sd: dict[str, torch.Tensor], name: str = "the state dict") -> dict[str, torch.Tensor]:
    """Any state-dict layout we read -> torchvision's VGG layout."""
    sd = from_timm_features_only(strip_wrappers(sd))
    if is_timm(sd):
        log.info("%s is in timm's VGG layout (pre_logits.fc1/fc2, head.fc): converted", name)
        sd = from_timm(sd)
    return sd


LAYOUTS = (
    "torchvision's VGG (features.N, classifier.0/3/6)",
    "timm's VGG (features.N, pre_logits.fc1/fc2, head.fc)",
    "either without fc8 (num_classes=0: no classifier.6 or head.fc)",
)


def holds(sd: dict) -> str:
    """What a state dict holds, by key prefix: ``"conv1.* (2 tensors), fc.* (2 tensors)"``."""
    groups: dict[str, int] = {}
    for k in sd:
        head = k.split(".")[0]
        groups[head] = groups.get(head, 0) + 1
    listed = ", ".join(f"{g}.* ({n} tensor{'s' * (n > 1)})" for g, n in list(groups.items())[:8])
    return f"{len(sd)} tensors: {listed}{', ...' if len(groups) > 8 else ''}" if sd else "no tensors"


def infer_arch(sd: dict[str, torch.Tensor], width: float | None = None) -> dict:
    """Read config, width, fc_dim, num_classes, batch norm and training crop off a
    torchvision-layout state dict (``width``: the caller's value, used if the shapes fit it)."""
    convs = sorted(
        int(k.split(".")[1])
        for k in sd
        if k.startswith("features.") and k.endswith(".weight") and sd[k].ndim == 4
    )
    if not convs or "classifier.0.weight" not in sd or "classifier.3.weight" not in sd:
        raise WeightsError(
            f"the state dict is in none of the VGG layouts tried: {'; '.join(LAYOUTS)}. It holds "
            f"{holds(sd)}. Pass a VGG checkpoint in one of them, or ours (.safetensors from save_weights)"
        )
    shapes = [(sd[f"features.{i}.weight"].shape[-1], sd[f"features.{i}.weight"].shape[0]) for i in convs]
    bn = any(k.endswith("running_mean") for k in sd)
    # A and A-LRN have the same convs; A-LRN's LRN module shifts the index of the second conv
    lrn = len(convs) > 1 and convs[1] - convs[0] == (5 if bn else 4)
    cells = sd["classifier.0.weight"].shape[1] / shapes[-1][1]
    kernel = round(math.sqrt(cells))
    if kernel * kernel != cells:
        raise WeightsError(f"fc6 takes {int(cells)} inputs per pool5 channel: not a square map")
    for name, blocks in CONFIGS.items():
        spec = [s if isinstance(s, tuple) else (3, s) for b in blocks for s in b if s != "LRN"]
        has_lrn = any(s == "LRN" for b in blocks for s in b)
        if has_lrn != lrn or [k for k, _ in spec] != [k for k, _ in shapes]:
            continue
        found = infer_width(name, [c for _, c in shapes], width)
        if found is not None:
            return dict(
                config=name,
                width=found,
                fc_dim=sd["classifier.0.weight"].shape[0],
                num_classes=sd["classifier.6.weight"].shape[0] if "classifier.6.weight" in sd else 0,
                batch_norm=bn,
                crop=32 * kernel,
            )
    raise WeightsError(f"no VGG configuration has conv kernels/widths {shapes}")


def conv_widths(config: str) -> list[int]:
    """Table-1 output channels of each conv layer of ``config``, in order."""
    return [
        s[1] if isinstance(s, tuple) else s
        for b in CONFIGS[canonical_config(config)]
        for s in b
        if s != "LRN"
    ]


def infer_width(config: str, channels: list[int], hint: float | None = None) -> float | None:
    """The width factor that gives every conv layer of ``config`` the ``channels`` found in a
    file: ``hint`` if it fits, else the simplest fraction p/q that does (0.1, 0.3, 1/16, ...);
    None if none does. conv1 alone cannot tell 0.1 (6.4 -> 6 channels) from 0.09375."""
    pairs = list(zip(conv_widths(config), channels))
    fits = lambda w: all(scaled(base, w) == c for base, c in pairs)  # noqa: E731
    if hint is not None and fits(hint):
        return hint
    lo = max((c - 0.5) / base for base, c in pairs)
    hi = min((c + 0.5) / base for base, c in pairs)
    for q in range(1, 257):
        for p in range(max(1, math.floor(lo * q)), math.ceil(hi * q) + 1):
            if fits(p / q):
                return p / q
    return None
