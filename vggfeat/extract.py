"""Appendix B: the image descriptor vggfeat is for.

For each net (D, E, or any VGG): apply it densely at every smallest side Q (Sec. 3.2), average
the post-ReLU fc7 map over space (global average pooling), average with the horizontally flipped
image's descriptor, then combine the scales by averaging (VOC), stacking (Caltech) or taking the
maximum, and L2-normalise once at the end (the paper leaves the place open; ``normalize=
"per_scale"`` normalises each scale before combining). Several nets are fused late by stacking
their (each normalised) descriptors.

``cache=DIR`` streams rows into a memory-mapped ``features.npy`` with a ``done.npy`` mask and a
``manifest.json`` naming the weights (fingerprints) and every protocol parameter: a killed run
resumes where it stopped, and a cache made with other weights or parameters is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .data import as_source
from .dense import DenseEngine
from .models import VGG, vgg
from .weights import fingerprint

log = logging.getLogger("vggfeat")
AGGREGATES = ("mean", "stack", "max")
CACHE_VERSION = 1


def _as_models(model, weights) -> list[VGG]:
    models = list(model) if isinstance(model, (tuple, list)) else [model]
    ws = list(weights) if isinstance(weights, (tuple, list)) else [weights] * len(models)
    if len(ws) != len(models):
        raise ValueError(
            f"got {len(models)} models but {len(ws)} weights; pass one weights "
            "source per model (None for random init)"
        )
    out = []
    for m, w in zip(models, ws):
        if isinstance(m, VGG):
            if w is not None:
                from .weights import load_weights

                load_weights(m, w)
            out.append(m)
        elif isinstance(m, str):
            out.append(vgg(m, weights=w))
        else:
            raise TypeError(
                f"model must be a config letter, a vggfeat VGG or a tuple of them, got {type(m).__name__}"
            )
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

    After a call, ``failures_`` lists ``(index, name, reason)`` of inputs that could not be
    decoded (their rows are NaN when ``on_error="skip"``).
    """

    def __init__(
        self,
        model="D",
        *,
        weights=None,
        scales=(256, 384, 512),
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
        }

    def __call__(self, images) -> np.ndarray:
        source = as_source(images, self.image_column)
        n, m = len(source), len(self.models)
        # Late fusion: each net's descriptor is L2-normalised, so the L2 norm of the stack is
        # sqrt(m); dividing each part by sqrt(m) normalises the stack without a second pass.
        scale = 1 / np.sqrt(m) if (self.normalize is True and m > 1) else 1.0
        store = _Cache(self.cache, n, self.dim, m, self.protocol(), source) if self.cache else None
        out = store.features if store else np.full((n, self.dim), np.nan, dtype=np.float32)
        self.failures_ = []
        combine = lambda t: descriptor(t, aggregate=self.aggregate, normalize=self.normalize)
        off = 0
        for k, (engine, d) in enumerate(zip(self.engines, self.dims)):
            sl = slice(off, off + d)
            sink = (lambda idx, rows, k=k, sl=sl: store.write(idx, k, sl, rows * scale)) if store else None
            res = engine.run(
                source,
                combine,
                d,
                on_error=self.on_error,
                sink=sink,
                skip=store.done[:, k] if store else None,
            )
            if res.rows is not None:
                out[:, sl] = res.rows * scale
            if k == 0:
                self.failures_ = res.failures
            off += d
        if self.failures_:
            listed = "; ".join(f"#{i} {name}" for i, name, _ in self.failures_[:20])
            warnings.warn(
                f"{len(self.failures_)} image(s) could not be read and have NaN rows "
                f"(see Extractor.failures_): {listed}",
                stacklevel=2,
            )
        return out


def extract(
    images,
    *,
    model="D",
    weights=None,
    scales=(256, 384, 512),
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
) -> np.ndarray:
    """Appendix-B descriptors of ``images``: float32 (N, D), one row per input, in input order.

    ``images``: paths, a directory (recursive, sorted), PIL images, arrays, tensors, a Hugging
    Face ``Dataset`` (image column auto-detected or ``image_column``) or a torch Dataset.
    ``model``: "D", a :class:`VGG`, or a tuple for late fusion by stacking (``weights`` then a
    tuple too). ``scales``: smallest sides Q. ``aggregate``: "mean" (D = C), "stack" (D = S * C)
    or "max" over scales, C = 4096 for fc7. ``layer``: "fc7", "fc6", or a conv/pool layer
    ("pool5", "conv5_3"), spatially averaged. ``cache``: a folder; see the module docstring.
    ``on_error="skip"`` gives NaN rows for unreadable inputs and warns with their list.
    With a cache the result is a read-only view of the memory-mapped file.
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
    )(images)


def _inputs_key(source) -> str:
    """Identity of the inputs: their paths, or for in-memory images their pixels (cheap next to
    the network), or a Hugging Face dataset's fingerprint; a torch Dataset only by its length."""
    h = hashlib.sha256(str(len(source)).encode())
    names = source.paths()
    if source.kind == "hf":
        h.update(str(getattr(source.items, "_fingerprint", "")).encode())
    elif names is not None and all(isinstance(x, (str, os.PathLike)) for x in source.items):
        h.update("\n".join(names).encode())
    elif source.kind == "list":
        for item in source.items:
            if isinstance(item, (str, os.PathLike)):
                h.update(str(item).encode())
            elif hasattr(item, "tobytes"):  # PIL images and numpy arrays
                h.update(item.tobytes())
            elif isinstance(item, torch.Tensor):
                h.update(item.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Cache:
    """``features.npy`` (N, D) float32 memmap, ``done.npy`` (N, nets) bool, ``manifest.json``."""

    def __init__(self, root, n, dim, nets, protocol, source):
        from .dense import process_state

        self.root = Path(root)
        manifest = {"version": CACHE_VERSION, "n": n, "dim": dim, "inputs": _inputs_key(source), **protocol}
        state = process_state()
        path = self.root / "manifest.json"
        if path.exists():
            old = json.loads(path.read_text())
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            if diff:
                raise ValueError(
                    f"cache {self.root} was made with other {', '.join(diff)} "
                    f"(cached: { {k: old.get(k) for k in diff} }); refusing to mix "
                    "features. Use another cache folder or delete this one."
                )
        elif state.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            f = np.lib.format.open_memmap(self.root / "features.npy", "w+", np.float32, (n, dim))
            f[:] = np.nan
            f.flush()
            d = np.lib.format.open_memmap(self.root / "done.npy", "w+", np.bool_, (n, nets))
            d.flush()
            del f, d
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=1))
            tmp.replace(path)  # the manifest appears only once the arrays exist
        state.wait_for_everyone()
        self.features = np.load(self.root / "features.npy", mmap_mode="r+")
        self.done = np.load(self.root / "done.npy", mmap_mode="r+")
        if self.done.all():
            log.info("cache %s: all %d rows present", self.root, n)
        elif self.done.any():
            log.info("cache %s: resuming, %d of %d rows present", self.root, int(self.done.all(1).sum()), n)

    def write(self, idx, k, sl, rows):
        self.features[idx, sl] = rows
        self.features.flush()  # rows reach the file before they are marked done
        self.done[idx, k] = True
        self.done.flush()
