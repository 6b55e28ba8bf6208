"""timm's ``features_only`` convention: a net that returns several intermediate maps as a list.

timm's VGG exposes six outputs, ``out_indices`` 0..5: the output of each block at full
resolution, just before its max-pool (reductions 1, 2, 4, 8, 16; for VGG-D conv1_2, conv2_2,
conv3_3, conv4_3, conv5_3, post-ReLU), and pool5 (reduction 32). We keep those indices and also
take our layer names (``"conv3_2"``, ``"pool4"``) in their place. Each output is described by a
dict as timm writes it (``num_chs``, ``reduction``, ``module`` = ``features.N``) plus ``layer``,
our name for it. The module works on anything with a ``features`` Sequential and a ``layers``
table (a :class:`vggfeat.models.VGG`), so the model module can use it without an import circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureInfo(list):
    """One dict per output map; ``channels()``, ``reduction()``, ``module_name()`` as in timm
    (a list over all outputs, or the value of output ``idx``)."""

    def get(self, key: str, idx: int | None = None):
        return [d[key] for d in self] if idx is None else self[idx][key]

    def channels(self, idx: int | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None):
        return self.get("module", idx)

    def layer_name(self, idx: int | None = None):
        return self.get("layer", idx)


def layer_info(model: nn.Module, layer: str) -> dict:
    """The feature-info dict of a named layer of the conv part (``conv3_2``, ``norm1``, ``pool5``)."""
    part, idx = model.layers.get(layer, (None, None))
    if part != "features":
        names = [n for n, (p, _) in model.layers.items() if p == "features"]
        raise ValueError(
            f"layer {layer!r} is not a feature map of the conv part; choose one of {names}, or use "
            "model.dense()(x, layer='fc7') for the maps of the fully-connected layers"
        )
    mods = list(model.features[: idx + 1])
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    pools = sum(isinstance(m, nn.MaxPool2d) for m in mods)
    channels = convs[-1].out_channels if convs else 3
    return dict(num_chs=channels, reduction=2**pools, module=f"features.{idx}", layer=layer)


def stages(model: nn.Module) -> FeatureInfo:
    """timm's six VGG outputs: each block's output before its pool, then pool5."""
    by_index = {idx: name for name, (part, idx) in model.layers.items() if part == "features"}
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    names = [by_index[i - 1] for i in pools] + [by_index[pools[-1]]]
    return FeatureInfo(layer_info(model, n) for n in names)


def select(model: nn.Module, out_indices) -> FeatureInfo:
    """``out_indices`` as timm reads them (a sequence of stage indices, negative from the end, or
    an int n for the last n stages) or as layer names -> the chosen outputs' info, in order."""
    all_stages = stages(model)
    n = len(all_stages)
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices}: an int takes the last n of {n} stages, 1..{n}")
        out_indices = range(n - out_indices, n)
    if isinstance(out_indices, str) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(
            f"out_indices must be a non-empty sequence of stage indices (0..{n - 1}) or layer "
            f"names, got {out_indices!r}"
        )
    picked = []
    for i in out_indices:
        if isinstance(i, str):
            picked.append(layer_info(model, i))
        elif isinstance(i, int) and -n <= i < n:
            picked.append(all_stages[i])
        else:
            raise ValueError(
                f"out_indices entry {i!r} is neither a stage index in {-n}..{n - 1} nor a layer "
                f"name; the stages are {all_stages.layer_name()}"
            )
    return FeatureInfo(picked)


class FeatureMaps(nn.Module):
    """The conv part of a VGG up to the deepest requested output; ``forward(x)`` returns the
    requested maps as a list, ``(N, num_chs, H / reduction, W / reduction)`` each (floor at each
    pool). Shares the parent's modules; state-dict keys are torchvision's ``features.N``."""

    def __init__(self, model: nn.Module, out_indices=(0, 1, 2, 3, 4, 5)):
        super().__init__()
        self.feature_info = select(model, out_indices)
        taps = [int(d["module"].split(".")[1]) for d in self.feature_info]
        self.features = model.features[: max(taps) + 1]
        self._taps = taps
        self.layers = {k: v for k, v in model.layers.items() if v[0] == "features" and v[1] <= max(taps)}
        for name in ("config", "arch", "crop", "preprocess", "pretrained_cfg", "meta"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for i, mod in enumerate(self.features):
            x = mod(x)
            if i in self._taps:
                out[i] = x
        return [out[i] for i in self._taps]
