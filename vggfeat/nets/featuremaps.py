"""timm's ``features_only`` convention: a net that returns several intermediate maps as a list.

timm's VGG exposes six outputs, ``out_indices`` 0..5: the output of each block at full
resolution, just before its max-pool (reductions 1, 2, 4, 8, 16; for VGG-D conv1_2, conv2_2,
conv3_3, conv4_3, conv5_3, post-ReLU), and pool5 (reduction 32). We keep those indices and also
take our layer names (``"conv3_2"``, ``"pool4"``) in their place. Each output is described by a
dict as timm writes it (``num_chs``, ``reduction``, ``module`` = ``features.N``) plus ``layer``,
our name for it. The module works on anything with a ``features`` Sequential and a ``layers``
table (a :class:`vggfeat.nets.models.VGG`), so the model module can use it without an import circle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn


class FeatureInfo:
    """timm's ``FeatureInfo``: ``info``, one dict per available output (each with its ``index``
    in ``info``), and ``out_indices``, the outputs a model returns. As in timm, ``get(key)`` and
    ``get_dicts()`` read the selected outputs, ``get(key, idx)`` and ``info[idx]`` any output by
    its index; iterating yields the selected outputs' dicts, in order."""

    def __init__(self, info: list[dict], out_indices: Sequence[int] | None = None):
        self.info = [{**d, "index": i} for i, d in enumerate(info)]
        self.out_indices = tuple(range(len(info)) if out_indices is None else out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        pick = lambda d: d if keys is None else {k: d[k] for k in keys}  # noqa: E731
        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[i]) for i in idx]
        return pick(self.info[idx])

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def layer_name(self, idx=None):
        return self.get("layer", idx)

    def __getitem__(self, idx):
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)


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


def stage_layers(model: nn.Module) -> list[str]:
    """Our names of timm's six VGG outputs: each block's output before its pool, then pool5."""
    by_index = {idx: name for name, (part, idx) in model.layers.items() if part == "features"}
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    return [by_index[i - 1] for i in pools] + [by_index[pools[-1]]]


def stages(model: nn.Module) -> FeatureInfo:
    """timm's six VGG outputs, all selected (``out_indices`` 0..5)."""
    return FeatureInfo([layer_info(model, n) for n in stage_layers(model)])


def select(model: nn.Module, out_indices) -> FeatureInfo:
    """``out_indices`` as timm reads them (a sequence of stage indices, negative from the end, or
    an int n for the last n stages) or as layer names -> a :class:`FeatureInfo` whose
    ``out_indices`` pick the outputs in order. timm keeps the indices as given (an int n becomes
    ``(-n, ..., -1)``); a layer name that is not one of the six stages is appended to ``info``
    and picked by its new index."""
    names = stage_layers(model)
    n = len(names)
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices}: an int takes the last n of {n} stages, 1..{n}")
        return FeatureInfo([layer_info(model, name) for name in names], range(-out_indices, 0))
    if isinstance(out_indices, str) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(
            f"out_indices must be a non-empty sequence of stage indices (0..{n - 1}) or layer "
            f"names, got {out_indices!r}"
        )
    picked = []
    for i in out_indices:
        if isinstance(i, str):
            layer_info(model, i)  # an unknown or fully-connected layer is refused here
            if i not in names:
                names.append(i)
            picked.append(names.index(i))
        elif isinstance(i, int) and -n <= i < n:
            picked.append(i)
        else:
            raise ValueError(
                f"out_indices entry {i!r} is neither a stage index in {-n}..{n - 1} nor a layer "
                f"name; the stages are {names[:n]}"
            )
    return FeatureInfo([layer_info(model, name) for name in names], picked)


def intermediates(model: nn.Module, x: torch.Tensor, indices, stop_early, output_fmt, intermediates_only):
    """timm's ``forward_intermediates`` (see :meth:`vggfeat.VGG.forward_intermediates`)."""
    if output_fmt != "NCHW":
        raise ValueError(f"output_fmt={output_fmt!r}: VGG's maps come as 'NCHW' only")
    info = select(model, len(stage_layers(model)) if indices is None else indices)
    taps = sorted({int(d["module"].split(".")[1]) for d in info.get_dicts()})  # forward order, as timm
    layers = model.features[: taps[-1] + 1] if stop_early else model.features
    maps = []
    for i, mod in enumerate(layers):
        x = mod(x)
        if i in taps:
            maps.append(x)
    return maps if intermediates_only else (x, maps)


# timm's features_only net flattens the ``features`` Sequential, so its keys read ``features_N.``
TIMM_FLAT_KEY = re.compile(r"^features_(\d+)\.")


def from_timm_features_only(sd: dict) -> dict:
    """Keys of timm's ``features_only`` VGG (``features_N.weight``) -> torchvision's
    (``features.N.weight``); other keys unchanged."""
    return {TIMM_FLAT_KEY.sub(r"features.\1.", k): v for k, v in sd.items()}


class FeatureMaps(nn.Module):
    """The conv part of a VGG up to the deepest requested output; ``forward(x)`` returns the
    requested maps as a list, ``(N, num_chs, H / reduction, W / reduction)`` each (floor at each
    pool). Shares the parent's modules; state-dict keys are torchvision's ``features.N``, and a
    state dict of timm's ``features_only`` VGG (``features_N``) loads too."""

    def __init__(self, model: nn.Module, out_indices=(0, 1, 2, 3, 4, 5)):
        super().__init__()
        self.feature_info = select(model, out_indices)
        taps = [int(d["module"].split(".")[1]) for d in self.feature_info.get_dicts()]
        self.features = model.features[: max(taps) + 1]
        self._taps = taps
        self.layers = {k: v for k, v in model.layers.items() if v[0] == "features" and v[1] <= max(taps)}
        for name in ("config", "arch", "crop", "preprocess", "pretrained_cfg", "meta"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))
        self._register_load_state_dict_pre_hook(_timm_keys)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for i, mod in enumerate(self.features):
            x = mod(x)
            if i in self._taps:
                out[i] = x
        return [out[i] for i in self._taps]


def _timm_keys(state_dict, prefix, *args):
    """Rename timm's ``features_N.`` keys in place before loading (a load_state_dict pre-hook)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + TIMM_FLAT_KEY.sub(r"features.\1.", key[len(prefix) :])
        if new != key:
            state_dict[new] = state_dict.pop(key)
