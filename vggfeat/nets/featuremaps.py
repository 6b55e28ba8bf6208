"""timm's ``features_only`` convention: a net that returns several intermediate maps as a list.

timm's VGG exposes six outputs, ``out_indices`` 0..5: the output of each block at full
resolution, just before its max-pool (reductions 1, 2, 4, 8, 16; for VGG-D conv1_2, conv2_2,
conv3_3, conv4_3, conv5_3, post-ReLU), and pool5 (reduction 32). We keep those indices and also
take our layer names (``"conv3_2"``, ``"pool4"``) in their place. Each output is described by a
dict as timm writes it (``num_chs``, ``reduction``, ``module`` = ``features.N``) plus ``layer``,
our name for it; a model's ``feature_info`` is the list of the six, recorded when it is built.
Also here: timm's ``prune_intermediate_layers`` (:func:`prune`) and the choice of ``features_only``
wrapper (``feature_cls``, :func:`features_net`). The module works on anything with a ``features``
Sequential, a ``layers`` table and that ``feature_info`` (a :class:`vggfeat.nets.models.VGG`), so
the model module can use it without an import circle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from .timm_conventions import TimmConfig


class FeatureInfo(list):
    """timm's feature info: a list of one dict per available output (``num_chs``, ``reduction``,
    ``module``, ``index``, and ``layer``, our name), which is what timm's wrappers
    (``FeatureGetterNet``, ``FeatureListNet``) and ``timm.models.FeatureInfo`` read from a model,
    plus ``out_indices``, the outputs a features-only net returns, and the methods of timm's
    ``FeatureInfo``: ``get(key)`` and ``get_dicts()`` read the selected outputs, ``get(key, idx)``
    and ``info[idx]`` any output by its index. Iterating yields every output, as timm's does."""

    def __init__(self, info: list[dict], out_indices: Sequence[int] | None = None):
        super().__init__(dict(d, index=i) for i, d in enumerate(info))
        self.out_indices = tuple(range(len(info)) if out_indices is None else out_indices)

    @property
    def info(self) -> list[dict]:
        return list(self)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        pick = lambda d: d if keys is None else {k: d[k] for k in keys}  # noqa: E731
        if idx is None:
            return [pick(self[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self[i]) for i in idx]
        return pick(self[idx])

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def layer_name(self, idx=None):
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
    and picked by its new index. The six stages are ``model.feature_info``, recorded when the
    model was built (as timm's VGG does), so they keep their indices after pruning."""
    info = [{k: v for k, v in d.items() if k != "index"} for d in model.feature_info]
    names = [d["layer"] for d in info]
    n = len(names)
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices}: an int takes the last n of {n} stages, 1..{n}")
        return FeatureInfo(info, range(-out_indices, 0))
    if isinstance(out_indices, str) or not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(
            f"out_indices must be a non-empty sequence of stage indices (0..{n - 1}) or layer "
            f"names, got {out_indices!r}"
        )
    picked = []
    for i in out_indices:
        if isinstance(i, str):
            if i not in names:
                info.append(layer_info(model, i))  # an unknown or fully-connected layer is refused here
                names.append(i)
            picked.append(names.index(i))
        elif isinstance(i, int) and not isinstance(i, bool) and -n <= i < n:
            picked.append(i)
        else:
            raise ValueError(
                f"out_indices entry {i!r} is neither a stage index in {-n}..{n - 1} nor a layer "
                f"name; the stages are {names[:n]}"
            )
    return FeatureInfo(info, picked)


def tap(d: dict) -> int:
    """The index in ``features`` of the module whose output a feature-info dict describes."""
    return int(d["module"].split(".")[1])


def intermediates(model: nn.Module, x: torch.Tensor, indices, stop_early, output_fmt, intermediates_only):
    """timm's ``forward_intermediates`` (see :meth:`vggfeat.VGG.forward_intermediates`)."""
    if output_fmt != "NCHW":
        raise ValueError(f"output_fmt={output_fmt!r}: VGG's maps come as 'NCHW' only")
    info = select(model, len(model.feature_info) if indices is None else indices)
    taps = sorted({tap(d) for d in info.get_dicts()})  # forward order, as timm
    if taps[-1] >= len(model.features):
        kept = [d["layer"] for d in model.feature_info if tap(d) < len(model.features)]
        raise ValueError(
            f"indices={indices!r} asks for maps past the end of this pruned net "
            f"(prune_intermediate_layers kept the stages {kept}); build the net again for deeper maps"
        )
    layers = model.features[: taps[-1] + 1] if stop_early else model.features
    maps = []
    for i, mod in enumerate(layers):
        x = mod(x)
        if i in taps:
            maps.append(x)
    return maps if intermediates_only else (x, maps)


def take_indices(n: int, indices) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: None (all), an int k (the last k) or a sequence of stage
    indices (negative from the end) -> (the indices counted from the start, the largest)."""
    if indices is None:
        indices = n
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices}: an int takes the last k of {n} stages, 1..{n}")
        taken = list(range(n - indices, n))
    else:
        taken = [i + n if isinstance(i, int) and i < 0 else i for i in indices]
        bad = [i for i, t in zip(indices, taken) if not isinstance(t, int) or not 0 <= t < n]
        if bad or not taken:
            raise ValueError(f"indices={indices!r}: give stage indices in {-n}..{n - 1}")
    return taken, max(taken)


def prune(model: nn.Module, indices, prune_head: bool) -> list[int]:
    """timm's ``prune_intermediate_layers`` on a VGG: the conv part is cut after the deepest stage
    in ``indices``; the head (avgpool, fc6, fc7, fc8) goes too when ``prune_head`` or when the
    conv part no longer ends at pool5 (the head is sized for pool5), and ``forward`` then returns
    the last kept map. Returns the stage indices counted from the start, for
    ``forward_intermediates``."""
    taken, deepest = take_indices(len(model.feature_info), indices)
    end = tap(model.feature_info[deepest])
    model.features = model.features[: end + 1]
    for name in [k for k, (part, idx) in model.layers.items() if part == "features" and idx > end]:
        del model.layers[name]
    if prune_head or deepest < len(model.feature_info) - 1:
        model.avgpool = nn.Identity()
        model.classifier = nn.Sequential()
        for name in ("fc6", "fc7", "fc8"):
            model.layers.pop(name, None)
        model.global_pool = ""
    return taken


FEATURE_CLASSES = ("list", "getter")  # timm's names whose nets return what FeatureMaps returns


def features_net(model: nn.Module, out_indices, feature_cls=None) -> nn.Module:
    """timm's ``features_only`` net of ``model``: a :class:`FeatureMaps` for ``feature_cls`` None,
    ``"list"`` or ``"getter"`` (timm's ``FeatureListNet`` and ``FeatureGetterNet`` both return the
    maps as a list, which FeatureMaps does), or ``feature_cls(model, out_indices=...)`` for a
    class, such as timm's own wrappers, which read ``model.feature_info``."""
    out_indices = (0, 1, 2, 3, 4, 5) if out_indices is None else out_indices
    if feature_cls is None or (isinstance(feature_cls, str) and feature_cls.lower() in FEATURE_CLASSES):
        return FeatureMaps(model, out_indices)
    if not callable(feature_cls):
        raise ValueError(
            f"feature_cls={feature_cls!r}: vggfeat builds {' or '.join(map(repr, FEATURE_CLASSES))} "
            "nets (a list of maps); pass a class, e.g. timm's FeatureDictNet, for another wrapper"
        )
    net = feature_cls(model, out_indices=out_indices)
    net.pretrained_cfg = net.default_cfg = model.pretrained_cfg  # as timm's builder does
    return net


# timm's features_only net flattens the ``features`` Sequential, so its keys read ``features_N.``
TIMM_FLAT_KEY = re.compile(r"^features_(\d+)\.")


def from_timm_features_only(sd: dict) -> dict:
    """Keys of timm's ``features_only`` VGG (``features_N.weight``) -> torchvision's
    (``features.N.weight``); other keys unchanged."""
    return {TIMM_FLAT_KEY.sub(r"features.\1.", k): v for k, v in sd.items()}


class FeatureMaps(TimmConfig, nn.Module):
    """The conv part of a VGG up to the deepest requested output; ``forward(x)`` returns the
    requested maps as a list, ``(N, num_chs, H / reduction, W / reduction)`` each (floor at each
    pool). Shares the parent's modules; state-dict keys are torchvision's ``features.N``, and a
    state dict of timm's ``features_only`` VGG (``features_N``) loads too."""

    def __init__(self, model: nn.Module, out_indices=(0, 1, 2, 3, 4, 5)):
        super().__init__()
        self.feature_info = select(model, out_indices)
        taps = [tap(d) for d in self.feature_info.get_dicts()]
        self.features = model.features[: max(taps) + 1]
        self._taps = taps
        self.layers = {k: v for k, v in model.layers.items() if v[0] == "features" and v[1] <= max(taps)}
        for name in ("config", "arch", "crop", "preprocess", "pretrained_cfg", "meta"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))
        self.in_chans = 3
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
