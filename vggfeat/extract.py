"""Appendix B: the image descriptor vggfeat is for.

For each net (D, E, or any VGG): apply it densely at every smallest side Q (Sec. 3.2), average
the post-ReLU fc7 map over space (global average pooling), average with the horizontally flipped
image's descriptor, then combine the scales by averaging (VOC), stacking (Caltech) or taking the
maximum, and L2-normalise once at the end (the paper leaves the place open; ``normalize=
"per_scale"`` normalises each scale before combining). Several nets are fused late by stacking
their (each normalised) descriptors.

Defaults are the paper's: net D with ImageNet weights (``weights="default"``) at Q = 256, 384,
512 (rescaled for nets trained at another crop). ``weights=None`` gives random features, with a
warning. ``cache=DIR`` keeps the rows in a feature store keyed per image (:mod:`vggfeat.store`):
any subset, permutation or superset of images already there is served from it and only the
missing ones are computed; a store made with other weights or parameters is refused.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

from .data import ImageSource, as_source
from .dense import DenseEngine, _shard, process_state
from .models import VGG, paper_scales
from .store import FeatureStore, image_keys
from .weights import fingerprint, load_weights, vgg

log = logging.getLogger("vggfeat")
AGGREGATES = ("mean", "stack", "max")
VISIBLE_S = 60  # how long to wait for other ranks' chunks to show on a network file system


def _as_models(model, weights) -> list[VGG]:
    """Nets to extract with. ``weights`` applies to config names ("default": ImageNet weights);
    a prebuilt :class:`VGG` keeps its own weights unless ``weights`` names a source to load."""
    models = list(model) if isinstance(model, (tuple, list)) else [model]
    ws = list(weights) if isinstance(weights, (tuple, list)) else [weights] * len(models)
    if len(ws) != len(models):
        raise ValueError(
            f"got {len(models)} models but {len(ws)} weights; pass one weights "
            "source per model ('default' for ImageNet weights, None for random init)"
        )
    out, random = [], []
    for m, w in zip(models, ws):
        if isinstance(m, VGG):
            if w not in (None, "default"):
                load_weights(m, w)
            out.append(m)
        elif isinstance(m, str):
            out.append(vgg(m, weights=w))
            if w is None:
                random.append(m)
        else:
            raise TypeError(
                f"model must be a config letter, a vggfeat VGG or a tuple of them, got {type(m).__name__}"
            )
    if random:
        msg = (
            f"weights=None: the features of VGG {', '.join(random)} come from an untrained, randomly "
            "initialised net (a random-feature baseline); pass weights='default' for ImageNet weights"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
        log.warning(msg)
    return out


def _default_scales(models: list[VGG]) -> tuple[int, ...]:
    """Sec. 3.2's Q = 256, 384, 512 for the paper's 224 crop, kept in ratio for other crops."""
    crops = sorted({m.crop for m in models})
    if len(crops) > 1:
        raise ValueError(
            f"the fused nets were trained at different crops {crops}, so the paper's scales differ "
            "between them; pass scales= explicitly"
        )
    return paper_scales(crops[0])


def descriptor(t: torch.Tensor, *, aggregate: str, normalize) -> torch.Tensor:
    """One image's (S, F, V, D) spatially averaged maps -> its appendix-B descriptor."""
    x = t.mean(dim=(1, 2))  # flip average (and views, 1 here) -> (S, D)
    if normalize == "per_scale":
        x = torch.nn.functional.normalize(x, dim=-1)
    if aggregate == "mean":
        x = x.mean(0)
    elif aggregate == "max":
        x = x.amax(0)
    else:  # "stack": scales side by side, in the order given
        x = x.flatten()
    if normalize is True:
        x = torch.nn.functional.normalize(x, dim=0)
    return x


class _Subset(ImageSource):
    """The images ``indices`` of ``source``, read lazily (the ones a store lacks)."""

    def __init__(self, source: ImageSource, indices: list[int]):
        super().__init__(source.items, column=source.column, kind=source.kind)
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        return self.source[self.indices[k]]

    def name(self, k: int) -> str:
        return self.source.name(self.indices[k])

    def load(self, k: int):
        return self.source.load(self.indices[k])

    def size(self, k: int) -> tuple[int, int]:
        return self.source.size(self.indices[k])

    def paths(self):
        return None


class Extractor:
    """Reusable :func:`extract`: builds the net(s) once, then ``extractor(images)``.

    After a call, ``failures_`` lists ``(index, name, reason)`` of inputs that could not be
    decoded (their rows are NaN when ``on_error="skip"``).
    """

    def __init__(
        self,
        model="D",
        *,
        weights="default",
        scales=None,
        flip=True,
        aggregate="mean",
        layer="fc7",
        normalize=True,
        batch_size=None,
        device=None,
        num_workers=None,
        cache=None,
        on_error="raise",
        progress=True,
        image_column=None,
    ):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if normalize not in (True, False, "per_scale"):
            raise ValueError(f"normalize must be True, False or 'per_scale', got {normalize!r}")
        self.models = _as_models(model, weights)
        scales = _default_scales(self.models) if scales is None else scales
        self.scales, self.flip, self.aggregate = tuple(int(q) for q in scales), flip, aggregate
        self.layer, self.normalize, self.cache, self.on_error = layer, normalize, cache, on_error
        self.image_column = image_column
        self.engines = [
            DenseEngine(
                m,
                scales=self.scales,
                flip=flip,
                layer=layer,
                batch_size=batch_size,
                device=device,
                num_workers=num_workers,
                progress=progress,
            )
            for m in self.models
        ]
        per_scale = len(self.scales) if aggregate == "stack" else 1
        self.dims = [e._out_channels() * per_scale for e in self.engines]
        self.failures_: list[tuple[int, str, str]] = []

    @property
    def dim(self) -> int:
        return sum(self.dims)

    def protocol(self) -> dict:
        """Everything the rows depend on: weights fingerprints and protocol parameters."""
        return {
            "models": [
                {"config": m.config, "fingerprint": fingerprint(m), "dim": d}
                for m, d in zip(self.models, self.dims)
            ],
            "scales": list(self.scales),
            "flip": self.flip,
            "aggregate": self.aggregate,
            "layer": self.layer,
            "normalize": self.normalize,
            # bf16 autocast (the default on GPU) gives other rows than float32 (on CPU)
            "precision": "bf16" if self.engines[0].autocast else "float32",
        }

    def _parts(self):
        """(engine, row width, columns, factor) of each fused net. Late fusion: each net's
        descriptor is L2-normalised, so the stack's norm is sqrt(m); dividing each part by
        sqrt(m) normalises the stack without a second pass."""
        m = len(self.models)
        scale = 1 / np.sqrt(m) if (self.normalize is True and m > 1) else 1.0
        offsets = np.cumsum([0, *self.dims])
        for engine, d, lo in zip(self.engines, self.dims, offsets):
            yield engine, d, slice(int(lo), int(lo) + d), scale

    def _combine(self, t):
        return descriptor(t, aggregate=self.aggregate, normalize=self.normalize)

    def __call__(self, images, *, keys=None) -> np.ndarray:
        """(N, dim) float32 descriptors of ``images``; ``keys``: one stable id per image for the
        feature store (needed only for a torch Dataset whose items are not file paths)."""
        source = as_source(images, self.image_column)
        if self.cache is not None:
            out, self.failures_ = self._from_store(source, keys)
        elif keys is not None:
            raise ValueError("keys= names images in a feature store; pass cache= too, or drop keys=")
        else:
            out, self.failures_ = self._compute(source)
        if self.failures_:
            listed = "; ".join(f"#{i} {name}" for i, name, _ in self.failures_[:20])
            warnings.warn(
                f"{len(self.failures_)} image(s) could not be read and have NaN rows "
                f"(see Extractor.failures_): {listed}",
                stacklevel=2,
            )
        return out

    def _compute(self, source):
        out = np.full((len(source), self.dim), np.nan, dtype=np.float32)
        failures = []
        for k, (engine, d, sl, scale) in enumerate(self._parts()):
            res = engine.run(source, self._combine, d, on_error=self.on_error)
            out[:, sl] = res.rows * scale
            failures = res.failures if k == 0 else failures
        return out, failures

    def _from_store(self, source, keys):
        """Serve stored rows, compute (sharded over the ranks) and store the missing ones, then
        assemble every row in input order from the store."""
        state = process_state()
        ids = _gather_keys(source, keys, state)
        store = FeatureStore(self.cache, self.protocol(), self.dims)
        out = np.full((len(source), self.dim), np.nan, dtype=np.float32)
        failed: dict[str, str] = {}  # key -> reason
        for k, (engine, d, sl, scale) in enumerate(self._parts()):
            todo = _on_main(state, lambda k=k: store.missing(ids, k))  # one view of the store for all
            todo = [i for i in todo if ids[i] not in failed]  # unreadable for an earlier net
            log.info("feature store %s: %d of %d rows present", self.cache, len(ids) - len(todo), len(ids))
            if todo:
                sink = lambda idx, rows, k=k, todo=todo: store.write(k, [ids[todo[j]] for j in idx], rows)
                res = engine.run(_Subset(source, todo), self._combine, d, on_error=self.on_error, sink=sink)
                failed.update({ids[todo[j]]: why for j, _, why in res.failures})
            expected = np.array([key not in failed for key in ids])
            deadline = time.monotonic() + VISIBLE_S
            while not (found := store.read(ids, k, out, sl, scale))[expected].all():
                if time.monotonic() > deadline:  # other ranks' chunks never appeared
                    raise RuntimeError(
                        f"feature store {self.cache}: {int((~found & expected).sum())} rows computed "
                        f"by other processes are not visible after {VISIBLE_S} s; is the folder on "
                        "a file system shared by every rank?"
                    )
                time.sleep(1)  # a network file system may list new files late
        failures = [(i, source.name(i), failed[key]) for i, key in enumerate(ids) if key in failed]
        return out, failures


def _on_main(state, fn):
    """``fn()`` computed by the main process and given to every rank."""
    if state.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list

    box = [fn() if state.is_main_process else None]
    broadcast_object_list(box)
    return box[0]


def _gather_keys(source, keys, state) -> list[str]:
    """Every image's key, each rank hashing its shard (the image bytes are read once)."""
    if state.num_processes == 1:
        return image_keys(source, keys)
    from accelerate.utils import gather_object

    lo, hi = _shard(len(source), state.process_index, state.num_processes)
    parts = sorted(gather_object([(lo, image_keys(source, keys, lo, hi))]), key=lambda p: p[0])
    return [key for _, part in parts for key in part]


def extract(
    images,
    *,
    model="D",
    weights="default",
    scales=None,
    flip=True,
    aggregate="mean",
    layer="fc7",
    normalize=True,
    batch_size=None,
    device=None,
    num_workers=None,
    cache=None,
    on_error="raise",
    progress=True,
    image_column=None,
    keys=None,
) -> np.ndarray:
    """Appendix-B descriptors of ``images``: float32 (N, D), one row per input, in input order.

    ``images``: paths, a directory (recursive, sorted), PIL images, arrays, tensors, a Hugging
    Face ``Dataset`` (image column auto-detected or ``image_column``) or a torch Dataset.
    ``model``: "D", a :class:`VGG`, or a tuple for late fusion by stacking (``weights`` then a
    tuple too). ``weights``: "default" (ImageNet weights for a config name; a prebuilt VGG keeps
    its own), None (random init, with a warning), a file or a torchvision name. ``scales``:
    smallest sides Q, by default the paper's 256, 384, 512 (in ratio for nets trained at another
    crop). ``aggregate``: "mean" (D = C), "stack" (D = S * C) or "max" over scales, C = 4096 for
    fc7. ``layer``: "fc7", "fc6", or a conv/pool layer ("pool5", "conv5_3"), spatially averaged.
    ``cache``: a feature-store folder (:mod:`vggfeat.store`), ``keys`` one id per image for it.
    ``on_error="skip"`` gives NaN rows for unreadable inputs and warns with their list. The
    result is an ordinary array: writing to it never touches the store.
    """
    return Extractor(
        model,
        weights=weights,
        scales=scales,
        flip=flip,
        aggregate=aggregate,
        layer=layer,
        normalize=normalize,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        cache=cache,
        on_error=on_error,
        progress=progress,
        image_column=image_column,
    )(images, keys=keys)
