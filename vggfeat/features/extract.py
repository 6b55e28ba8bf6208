"""Appendix B: the image descriptor vggfeat is for.

For each net (D, E, or any VGG): apply it densely at every smallest side Q (Sec. 3.2), average
the post-ReLU fc7 map over space (global average pooling), average with the horizontally flipped
image's descriptor, then combine the scales by averaging (VOC), stacking (Caltech) or taking the
maximum, and L2-normalise once at the end (the paper leaves the place open; ``normalize=
"per_scale"`` normalises each scale before combining). Several nets are fused late by stacking
their (each normalised) descriptors. Several layers come from one pass of each net, each
layer's descriptor made as if it were asked for alone.

Defaults are the paper's: net D with ImageNet weights (``weights="default"``) at Q = 256, 384,
512 (rescaled for nets trained at another crop). ``weights=None`` gives random features, with a
warning. ``cache=DIR`` keeps the rows in a feature store keyed per image (:mod:`vggfeat.features.store`):
any subset, permutation or superset of images already there is served from it and only the
missing ones are computed; rows of other weights or parameters go to a store of their own in
the same folder, never mixed with these. Each layer has its own store in the folder, so a run
of several layers serves a later run of one of them, and the other way round.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging

import numpy as np
import torch

from ..data.decode import SubsetSource, as_source
from ..data.identity import library_versions
from ..errors import ConfigMismatch, RandomWeightsWarning
from ..nets.models import VGG
from ..weights.loader import fingerprint, load_weights, vgg
from .batches import batch_column, feature_columns, is_batch
from .dense import DenseEngine
from .distributed import from_main, gather_keys, process_state
from .notices import warn_at_caller
from .scales import PROTOCOLS, as_scales, check_scales, default_scales
from .store import layer_store

log = logging.getLogger("vggfeat")
AGGREGATES = ("mean", "stack", "max")
# How long to wait for other ranks' rows to show on a network file system: NFS caches a
# folder's attributes (its listing) for up to 60 s by default (acdirmax), so twice that.
VISIBLE_S = 120
STORE_NAMES = {"fp32": "float32"}  # a precision's name in the store's protocol key


def _as_models(model, weights) -> list[VGG]:
    """Nets to extract with. ``weights`` applies to config names ("default": ImageNet weights);
    ``model`` None builds what a weights file holds (D otherwise). A prebuilt :class:`VGG` keeps
    its own weights unless ``weights`` names a source, which is loaded into a copy: the caller's
    net is left as it was."""
    ws = list(weights) if isinstance(weights, (tuple, list)) else None
    if model is None:
        model = [None] * len(ws) if ws is not None else None
    models = list(model) if isinstance(model, (tuple, list)) else [model]
    ws = ws if ws is not None else [weights] * len(models)
    if len(ws) != len(models):
        raise ValueError(
            f"got {len(models)} models but {len(ws)} weights; pass one weights "
            "source per model ('default' for ImageNet weights, None for random init)"
        )
    out, random, given = [], [], []
    for m, w in zip(models, ws):
        if isinstance(m, VGG):
            if w not in (None, "default"):
                m = load_weights(copy.deepcopy(m), w)
            elif m.pretrained_cfg.get("source") is None:  # the model's own record of its weights
                given.append(f"the given VGG-{m.config}")
            out.append(m)
        elif m is None or isinstance(m, str):
            try:
                out.append(vgg(m, weights=w))
            except ConfigMismatch as e:
                raise e.naming("model") from None
            if w is None:
                random.append(out[-1].config)
        else:
            raise TypeError(
                f"model must be a config letter, a vggfeat VGG or a tuple of them, got {type(m).__name__}"
            )
    if random or given:
        nets = " and ".join([f"VGG {', '.join(random)}"] * bool(random) + given)
        msg = (
            f"the features of {nets} come from an untrained, randomly initialised net "
            "(weights=None, or a net with no record of loaded weights in its pretrained_cfg: a "
            "random-feature baseline unless trained in this process); pass weights='default' for "
            "ImageNet weights, or load a file with vggfeat.load_weights"
        )
        warn_at_caller(msg, RandomWeightsWarning, once=True)
    return out


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


class Extractor:
    """Reusable :func:`extract`: builds the net(s) once, then ``extractor(images)``.

    Also a ``Dataset.map(extractor, batched=True)`` function: given a batch (a dict of columns)
    it returns ``{"features": rows}`` (``{"features_<layer>": ...}`` for several layers).

    After a call, ``failures_`` lists ``(index, name, reason)`` of inputs that could not be
    decoded (their rows are NaN when ``on_error="skip"``).
    """

    def __init__(
        self,
        model=None,
        *,
        weights="default",
        scales=None,
        flip=None,
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
        precision="auto",
        protocol="paper",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if normalize not in (True, False, "per_scale"):
            raise ValueError(f"normalize must be True, False or 'per_scale', got {normalize!r}")
        self.layers = as_layers(layer)
        self.models = _as_models(model, weights)
        scales = default_scales(self.models, protocol) if scales is None else as_scales(scales)
        flip = protocol == "paper" if flip is None else flip
        check_scales(self.models, scales, self.layers)
        self.scales, self.flip, self.aggregate = scales, flip, aggregate
        self.layer, self.normalize, self.cache, self.on_error = layer, normalize, cache, on_error
        self.image_column = image_column
        self.engines = [
            DenseEngine(
                m,
                scales=self.scales,
                flip=flip,
                layer=self.layers,  # one pass of each net gives every layer
                batch_size=batch_size,
                device=device,
                num_workers=num_workers,
                progress=progress,
                precision=precision,
            )
            for m in self.models
        ]
        self.precision = self.engines[0].precision  # the same device, so the same for every net
        per_scale = len(self.scales) if aggregate == "stack" else 1
        # row width of each layer's descriptor for each fused net, and of each net's engine row
        self.widths = {n: [e.channels(n) * per_scale for e in self.engines] for n in self.layers}
        self.dims = [sum(w[k] for w in self.widths.values()) for k in range(len(self.models))]
        self.failures_: list[tuple[int, str, str]] = []

    @property
    def dim(self) -> int:
        return sum(self.dims)

    def protocol(self, layer: str | None = None) -> dict:
        """Everything the rows depend on: weights fingerprints and protocol parameters; those of
        one ``layer``'s rows when given (what that layer's feature store is made with)."""
        layers = self.layers if layer is None else (layer,)
        dims = [sum(self.widths[n][k] for n in layers) for k in range(len(self.models))]
        return {
            "models": [
                {"config": m.config, "fingerprint": fingerprint(m), "dim": d}
                for m, d in zip(self.models, dims)
            ],
            "scales": list(self.scales),
            "flip": self.flip,
            "aggregate": self.aggregate,
            "layer": self.layer if layer is None else layer,
            "normalize": self.normalize,
            # rows of two precisions never mix; fp32 is named as stores made before the
            # option existed name it, so that those stay valid
            "precision": STORE_NAMES.get(self.precision.name, self.precision.name),
            "libraries": library_versions(),  # decoding and resize code
        }

    def _parts(self):
        """(net index, engine, combine, factor) of each fused net. Late fusion: each net's
        descriptor is L2-normalised, so the stack's norm is sqrt(m); dividing each part by
        sqrt(m) normalises the stack without a second pass."""
        m = len(self.models)
        scale = 1 / np.sqrt(m) if (self.normalize is True and m > 1) else 1.0
        for k, engine in enumerate(self.engines):
            sizes = [engine.channels(n) for n in self.layers]
            yield k, engine, functools.partial(self._combine, sizes=sizes), scale

    def _columns(self, k: int):
        """(layer, columns in net ``k``'s engine row, columns in that layer's output) for each
        layer: an engine row holds the layers side by side, an output the fused nets."""
        lo = 0
        for n in self.layers:
            w, at = self.widths[n][k], sum(self.widths[n][:k])
            yield n, slice(lo, lo + w), slice(at, at + w)
            lo += w

    def _combine(self, t, sizes):
        """(S, F, V, sum of sizes) maps of the layers side by side -> their descriptors side by side."""
        per_layer = t.split(sizes, dim=-1)
        return torch.cat(
            [descriptor(x, aggregate=self.aggregate, normalize=self.normalize) for x in per_layer]
        )

    def __call__(self, images, *, keys=None):
        """(N, dim) float32 descriptors of ``images`` (a dict layer -> (N, width) when ``layer``
        names several); ``keys``: one stable id per image for the feature store (needed only for
        a torch Dataset whose items are not file paths). A ``Dataset.map`` batch gives a dict of
        new columns (class docstring)."""
        if is_batch(images):
            return feature_columns(self, self(images[batch_column(images, self.image_column)], keys=keys))
        source = as_source(images, self.image_column)
        if self.cache is not None:
            out, self.failures_ = self._from_store(source, keys)
        elif keys is not None:
            raise ValueError("keys= names images in a feature store; pass cache= too, or drop keys=")
        else:
            out, self.failures_ = self._compute(source)
        if self.failures_:
            listed = "; ".join(f"#{i} {name}" for i, name, _ in self.failures_[:20])
            warn_at_caller(
                f"{len(self.failures_)} image(s) could not be read and have NaN rows "
                f"(see Extractor.failures_): {listed}"
            )
        return out[self.layer] if isinstance(self.layer, str) else out

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        return {name: np.full((n, sum(w)), np.nan, dtype=np.float32) for name, w in self.widths.items()}

    def _compute(self, source):
        out, failures = self._empty(len(source)), []
        for k, engine, combine, scale in self._parts():
            res = engine.run(source, combine, self.dims[k], on_error=self.on_error)
            for name, cols, at in self._columns(k):
                out[name][:, at] = res.rows[:, cols] * scale
            failures = res.failures if k == 0 else failures
        return out, failures

    def _from_store(self, source, keys):
        """Serve stored rows, compute (sharded over the ranks) and store the missing ones, then
        assemble every row in input order from the store. Each layer has its own store
        (:func:`vggfeat.features.store.layer_store`), so rows of one layer serve any later request that
        names it, alone or with others."""
        state = process_state()
        ids = gather_keys(source, keys, state)
        stores = {n: layer_store(self.cache, n, self.protocol(n), self.widths[n]) for n in self.layers}
        out = self._empty(len(source))
        failed: dict[str, str] = {}  # key -> reason
        with contextlib.ExitStack() as writing:
            for s in stores.values():
                writing.enter_context(s.writing())
            for k, engine, combine, scale in self._parts():
                # again while reading finds damaged chunks: their rows are recomputed
                while not self._fill(state, source, ids, stores, k, engine, combine, scale, out, failed):
                    pass
        failures = [(i, source.name(i), failed[key]) for i, key in enumerate(ids) if key in failed]
        return out, failures

    def _fill(self, state, source, ids, stores, k, engine, combine, scale, out, failed) -> bool:
        """Compute and store net ``k``'s missing rows, then read every row of it into ``out``;
        False if a chunk proved damaged on reading (every rank reads every row, so all see it)."""
        # one view of the store for all ranks
        missing = from_main(state, lambda: {n: set(s.missing(ids, k)) for n, s in stores.items()})
        todo = sorted(i for i in set().union(*missing.values()) if ids[i] not in failed)
        for n, m in missing.items():
            log.info("feature store %s/%s: %d of %d rows present", self.cache, n, len(ids) - len(m), len(ids))
        if todo:
            sink = functools.partial(self._write, stores, k, [ids[i] for i in todo], missing, todo)
            res = engine.run(
                SubsetSource(source, todo), combine, self.dims[k], on_error=self.on_error, sink=sink
            )
            failed.update({ids[todo[j]]: why for j, _, why in res.failures})
        expected = np.array([key not in failed for key in ids])
        complete = True
        for n, _, at in self._columns(k):
            found = stores[n].read(ids, k, out[n], at, scale, expected=expected, wait_s=VISIBLE_S)
            complete &= bool(found[expected].all())
        return complete

    def _write(self, stores, k, todo_keys, missing, todo, idx, rows) -> None:
        """Sink of net ``k``'s engine: each layer's store gets the rows it lacks."""
        for name, cols, _ in self._columns(k):
            sel = [p for p, j in enumerate(idx) if todo[j] in missing[name]]
            if sel:
                stores[name].write(k, [todo_keys[idx[p]] for p in sel], rows[sel, cols])


def as_layers(layer) -> tuple[str, ...]:
    """``layer`` ("fc7" or several names) as a tuple of distinct names."""
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    if not layers or len(set(layers)) != len(layers) or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"layer must be a layer name or a tuple of distinct names, got {layer!r}")
    return layers


def extract(
    images,
    *,
    model=None,
    weights="default",
    scales=None,
    flip=None,
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
    precision="auto",
    protocol="paper",
) -> np.ndarray | dict[str, np.ndarray]:
    """Appendix-B descriptors of ``images``: float32 (N, D), one row per input, in input order.

    ``images``: paths (a list or a NumPy array of them), a directory (recursive, sorted), PIL
    images, arrays and tensors (one image, a list, or a 4-D batch; uint8, uint16, or float in
    [0, 1]: NaN, infinity and values outside are errors naming the image), a Hugging Face
    ``Dataset`` (image column auto-detected or ``image_column``) or a torch Dataset.
    ``model``: "D", a :class:`VGG`, or a tuple for late fusion by stacking (``weights`` then a
    tuple too); None (the default): what a weights file holds, else D. ``weights``: "default"
    (ImageNet weights for a config name; a prebuilt VGG keeps its own), None (random init, with
    a warning; a prebuilt VGG with no record of loaded weights warns too), a file or a
    torchvision name (loaded into a copy of a prebuilt VGG, never into the caller's). ``scales``:
    smallest sides Q (an int for one), by default the protocol's; ``flip``: also the
    horizontally flipped image, by default the protocol's. ``protocol``: ``"paper"`` (the
    default, Sec. 3.2 and Appendix B: Q = 256, 384, 512, in ratio for nets trained at another
    crop, each with its flip; the network cost of 21 forward passes of a 224 x 224 crop for a
    square image, 28 for a 4:3 one) or ``"single"`` (one scale, Q = 384, the paper's single test
    scale, no flip: 3.2 and 4.4 crops, about 6.6x cheaper, for a quick look). ``aggregate``:
    "mean" (D = C), "stack" (D = S * C) or "max" over scales, C = 4096 for fc7. ``layer``: "fc7",
    "fc6", or a conv/pool layer ("pool5", "conv5_3"), spatially averaged; several names
    (``("pool5", "fc6", "fc7")``) run each net once, taking every map on the way, and give a dict
    layer -> array, each as that layer's own call would.
    ``cache``: a feature-store folder (:mod:`vggfeat.features.store`), ``keys`` one id per image for it.
    ``on_error="skip"`` gives NaN rows for unreadable inputs and warns with their list. The
    result is an ordinary array: writing to it never touches the store.
    ``precision``: "auto" (bf16 where the device computes it natively and faster, else fp32),
    "fp32", "bf16" or "fp16" (CUDA); see :mod:`vggfeat.features.precision`. The rows are float32
    whatever it is, and the resolved name is part of the store's protocol.
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
        precision=precision,
        protocol=protocol,
    )(images, keys=keys)
