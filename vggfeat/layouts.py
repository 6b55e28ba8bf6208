"""State-dict layouts of other libraries, converted to torchvision's at the edge.

Everything past :func:`to_torchvision` sees one layout: torchvision's VGG (``features.N``,
``classifier.0/3/6`` as Linear layers). Converted here:

- wrapped models: ``torch.compile`` (``_orig_mod.``) and DataParallel/DDP (``module.``) prefixes;
- timm's VGG (``timm/models/vgg.py``): the same ``features.N``, but its head is a ``ConvMlp``,
  ``pre_logits.fc1`` (a k x k conv, k = 7 at crop 224, weight (fc_dim, C5, k, k)) and
  ``pre_logits.fc2`` (a 1x1 conv, (fc_dim, fc_dim, 1, 1)), then ``head.fc``, a Linear
  (num_classes, fc_dim). timm made its file from torchvision's by reshaping the Linear weights
  to conv kernels; flattening them back (C5, k, k order, as ``torch.flatten`` of the pool5 map)
  gives torchvision's tensors exactly.
"""

from __future__ import annotations

import logging

import torch

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
    sd = strip_wrappers(sd)
    if is_timm(sd):
        log.info("%s is in timm's VGG layout (pre_logits.fc1/fc2, head.fc): converted", name)
        sd = from_timm(sd)
    return sd
