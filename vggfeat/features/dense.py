"""The one engine for dense work (Sec. 3.2): whole images, several scales, both flips.

Each image is decoded once (in DataLoader workers, overlapping compute), rescaled so its
smallest side is each Q, and the fully-convolutional net runs on it and on its horizontal flip.
Images share a batch only when their resized sizes are equal ("dense means exact": padding
would change the convolution borders), so results do not depend on batch size or input order.
For every (image, scale, flip, view) the engine spatially averages the map at ``layer`` (or at
each of several layers, taken on the way in one pass, side by side along D); a ``combine``
function then turns an image's (S, F, V, D) tensor into its output row. ``views``
is ``"full"`` (the uncropped image, V = 1) or ``"grid"`` (Sec. 3.2 multi-crop: a regular 5x5
grid of crops of the net's training size, 224 for the paper's nets, V = 25).

Under ``accelerate launch`` each process takes a contiguous shard and rows are gathered back in
input order, each image exactly once.

Memory is bounded (:mod:`vggfeat.features.memory`): an image whose dense pass would exceed the
activation limit is an :class:`ImageError` naming it, its size and the limit, skipped under
``on_error="skip"`` like any unreadable image.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.decode import ImageSource, as_source, resize_smallest, resized_size, to_tensor
from ..errors import ImageError
from ..nets.models import PAPER_CROP, VGG
from .distributed import process_state, shard
from .memory import activation_bytes, activation_limit, conv_plan
from .precision import Capability, autocast, resolve

log = logging.getLogger("vggfeat")
GRID = 5  # 5x5 regular grid of crops per scale


def crop_grid(height: int, width: int, size: int = PAPER_CROP, n: int = GRID) -> list[tuple[int, int]]:
    """Top-left corners of an n x n grid of size x size crops, evenly spaced, corners included."""
    if min(height, width) < size:
        raise ValueError(f"multi-crop needs images of at least {size}x{size}, got {height}x{width}")
    # rounded half up (not Python's half-to-even), so the grid is symmetric about the centre
    ys = [int(i * (height - size) / (n - 1) + 0.5) for i in range(n)]
    xs = [int(j * (width - size) / (n - 1) + 0.5) for j in range(n)]
    return [(y, x) for y in ys for x in xs]


def default_device(device=None) -> torch.device:
    if device is None:
        return process_state().device
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device {device!r}: {str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r}: no CUDA device is available here (torch.cuda.is_available() is "
            "False); use cpu, or leave the device out"
        )
    return dev


@dataclass
class RunResult:
    rows: np.ndarray | None  # (N, K) float32, NaN rows for failed images; None with a sink
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (index, name, reason)


class _Decoded(Dataset):
    """Worker side: decode image i once and rescale it to every Q (uint8, as resized)."""

    def __init__(self, source: ImageSource, indices, scales, plan=(), flip=True, limit=None):
        self.source, self.indices, self.scales = source, list(indices), tuple(scales)
        self.plan, self.flip, self.limit = list(plan), flip, limit

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = self.indices[k]
        try:
            img = to_tensor(self.source.load(i))
            self._check_memory(i, *img.shape[-2:])
            return i, [resize_smallest(img, q) for q in self.scales], None
        except ImageError as e:
            return i, None, str(e)
        except Exception as e:  # anything else a decoder can throw for a bad input
            return i, None, f"{self.source.name(i)}: {type(e).__name__}: {e}"

    def _check_memory(self, i: int, h: int, w: int) -> None:
        if self.limit is None:
            return
        for q in self.scales:
            rh, rw = resized_size(h, w, q)
            need = activation_bytes(self.plan, rh, rw, self.flip)
            if need > self.limit:
                raise ImageError(
                    f"{self.source.name(i)}: a {w}x{h} image rescaled to {rw}x{rh} (Q={q}) needs about "
                    f"{need / 2**30:.1f} GiB of activations for a dense pass, above the limit of "
                    f"{self.limit / 2**30:.1f} GiB (max_activation_bytes=, $VGGFEAT_MAX_ACTIVATION_BYTES); "
                    "crop or shrink the image, or raise the limit"
                )


def _collate(batch):
    return batch


class DenseEngine:
    """Runs ``model.dense()`` over images; see the module docstring for the protocol.

    ``combine(t)``: t is an image's (S, F, V, D) tensor of spatially averaged maps (float32,
    on CPU) -> (K,) row. ``out_dim`` = K. ``precision``: "auto", "fp32", "bf16" or "fp16"
    (:mod:`vggfeat.features.precision`); ``self.precision`` is what it resolved to.
    """

    def __init__(
        self,
        model: VGG,
        *,
        scales,
        flip: bool = True,
        layer: str | tuple[str, ...] = "fc8",
        views: str = "full",
        batch_size: int | None = None,
        device=None,
        num_workers: int | None = None,
        progress: bool = True,
        precision: str = "auto",
        max_activation_bytes: int | None = None,
        capability: Capability | None = None,
    ):
        if views not in ("full", "grid"):
            raise ValueError(f"views must be 'full' or 'grid', got {views!r}")
        self.model, self.views, self.flip = model, views, flip
        self.layers = (layer,) if isinstance(layer, str) else tuple(layer)
        self.scales = tuple(int(q) for q in scales)
        if not self.scales:
            raise ValueError("scales must name at least one smallest-side size Q")
        self.net = model.dense()
        self.crop = getattr(
            model, "crop", PAPER_CROP
        )  # Sec. 3.2: multi-crop takes crops of the training size
        self.views_per_image = GRID * GRID if views == "grid" else 1
        need = self.crop if views == "grid" else max(self.net.min_side(n) for n in self.layers)
        if min(self.scales) < need:
            raise ValueError(
                f"scales {self.scales}: every Q must be at least {need} for layer "
                f"{layer!r} with views={views!r}"
            )
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size {batch_size}: must be at least 1 (None: sized to fit)")
        if num_workers is not None and int(num_workers) < 0:
            raise ValueError(f"num_workers {num_workers}: must be at least 0 (None: by CPU count)")
        self.device = default_device(device)
        self.max_activation_bytes = activation_limit(max_activation_bytes)
        # images per batch; with the 5x5 grid each image is 25 crops (x2 flips)
        default = (32 if self.device.type == "cuda" else 4) // (8 if views == "grid" else 1)
        self.batch_size = batch_size or max(1, default)
        self.num_workers = num_workers
        self.progress = progress
        # the policy of vggfeat.features.precision; ``capability`` replaces the hardware probe
        self.precision = resolve(precision, self.device, capability)

    # ---- per batch -------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) float [0, 1] RGB, all the same size -> (B, F, V, D) averaged maps, the
        layers side by side along D."""
        x = self.model.preprocess.apply(x.to(self.device, non_blocking=True))
        x = x.to(self.model.classifier[0].weight.dtype)  # a half-precision model runs as it is
        c = self.crop
        if self.views == "grid":
            crops = [x[..., y : y + c, z : z + c] for y, z in crop_grid(*x.shape[-2:], size=c)]
            x = torch.stack(crops, 1).flatten(0, 1)  # (B*V, 3, c, c)
        if self.flip:  # Sec. 3.2: the horizontal flip of the (resized) image or crop
            x = torch.cat([x, torch.flip(x, dims=[-1])])
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device.type):
            maps = self.net.forward_layers(x, self.layers)
        y = torch.cat([m.float().mean(dim=(-2, -1)) for m in maps], -1)  # spatial average of each map
        f = 2 if self.flip else 1
        return y.view(f, -1, self.views_per_image, y.shape[-1]).transpose(0, 1).cpu()

    # ---- whole run ---------------------------------------------------------------------------
    def run(
        self,
        images,
        combine: Callable[[torch.Tensor], torch.Tensor],
        out_dim: int,
        *,
        on_error: str = "raise",
        sink=None,
        image_column: str | None = None,
    ) -> RunResult:
        """Compute one row per image. ``sink(indices, rows)`` receives finished rows as they
        complete (for a feature store), and then no rows are returned. Otherwise returns all rows
        in order.
        The model is given back as it was found (see :func:`borrowed`)."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        source = as_source(images, image_column)
        state = process_state()
        n = len(source)
        lo, hi = shard(n, state.process_index, state.num_processes)
        todo = list(range(lo, hi))
        # with a sink (a cache) rows are not kept: memory stays flat in the number of images
        rows = None if sink else np.full((hi - lo, out_dim), np.nan, dtype=np.float32)
        with borrowed(self.model, self.device):
            batches = _Batches(self, combine, rows, lo, sink, total=len(todo))
            failures = self._run_shard(source, todo, batches, on_error)
        if state.num_processes > 1:
            from accelerate.utils import gather_object  # deferred: accelerate adds to start-up

            # with a sink every process wrote its rows already; only failures travel
            parts = gather_object([(lo, rows, failures)])
            parts.sort(key=lambda p: p[0])
            rows = None if sink else np.concatenate([p[1] for p in parts])
            failures = [f for p in parts for f in p[2]]
            state.wait_for_everyone()
        return RunResult(rows, failures)

    def _limit(self) -> int | None:
        return self.max_activation_bytes if self.views == "full" else None  # grid: crops only

    def _loader(self, source, todo):
        workers = self.num_workers
        if workers is None:
            workers = 0 if len(todo) < 8 else min(2, os.cpu_count() or 1)
        return DataLoader(
            _Decoded(source, todo, self.scales, conv_plan(self.net), self.flip, self._limit()),
            batch_size=1,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            prefetch_factor=2 * self.batch_size if workers else None,
        )

    def _run_shard(self, source, todo, batches: _Batches, on_error) -> list[tuple[int, str, str]]:
        """Decode and run the images ``todo``; returns the (index, name, reason) of those that
        could not be read (``on_error="skip"``)."""
        failures: list[tuple[int, str, str]] = []
        try:
            with torch.inference_mode():
                for [(i, resized, err)] in self._loader(source, todo):
                    if err is None:
                        batches.add(i, resized)
                        continue
                    if on_error == "raise":  # an in-memory image's err starts with its number
                        raise ImageError(err if err.startswith("image #") else f"image #{i}: {err}")
                    failures.append((i, source.name(i), err))
                    log.warning("skipping image #%d: %s", i, err)
                    batches.bar.update(1)
                batches.run_all()
        finally:  # rows finished before an error or interrupt are kept
            batches.bar.close()
            batches.flush_sink()
        return failures

    def _shape(self):
        d = sum(self.channels(n) for n in self.layers)
        return (len(self.scales), 2 if self.flip else 1, self.views_per_image, d)

    def channels(self, layer: str) -> int:
        """Channels of the map at ``layer``."""
        part, idx = self.net.layers[layer]
        if part == "classifier":
            return {1: self.net.fc6, 4: self.net.fc7, 6: self.net.fc8}[idx].out_features
        convs = [m for m in self.net.features[: idx + 1] if isinstance(m, torch.nn.Conv2d)]
        return convs[-1].out_channels


@dataclass
class _Partial:
    """An image in flight: its (S, F, V, D) maps so far, and how many scales are still to run."""

    maps: torch.Tensor
    left: int


class _Batches:
    """The batching state of one shard run, as a sampler keeps its own.

    ``buckets``: resized size -> waiting (image, scale index, uint8 tensor); a bucket runs when it
    holds ``batch_size`` images, or earlier when too many wait overall. ``pending``: the images
    some of whose scales have run. A finished image's
    row goes into ``rows`` (no sink) or into the buffer ``done`` handed to ``sink`` every 64 rows
    or 2 seconds, so a killed run loses little.
    """

    FLUSH_ROWS, FLUSH_SECONDS = 64, 2.0

    def __init__(self, engine: DenseEngine, combine, rows, offset: int, sink, *, total: int):

        self.engine, self.combine, self.rows, self.offset, self.sink = engine, combine, rows, offset, sink
        self.buckets: dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]] = {}
        self.pending: dict[int, _Partial] = {}
        self.done: list[tuple[int, np.ndarray]] = []  # finished rows not yet given to the sink
        self.last_flush = time.monotonic()
        show = engine.progress and process_state().is_main_process
        desc = engine.progress if isinstance(engine.progress, str) else "vggfeat"  # a str names the bar
        self.bar = tqdm(total=total, desc=desc, unit="img", disable=not show)

    def add(self, i: int, resized: list[torch.Tensor]) -> None:
        """Queue image ``i``'s resized copies (one per scale)."""
        self.pending[i] = _Partial(torch.empty(self.engine._shape()), len(resized))
        for s, t in enumerate(resized):
            key = tuple(t.shape[-2:])
            self.buckets.setdefault(key, []).append((i, s, t))
            if len(self.buckets[key]) == self.engine.batch_size:
                self.run_bucket(key)
        # Bound memory: images waiting in half-full buckets are run in smaller batches once too
        # many are waiting (exact either way).
        if sum(map(len, self.buckets.values())) > 8 * self.engine.batch_size * len(resized):
            for key in sorted(self.buckets, key=lambda k: -len(self.buckets[k])):
                self.run_bucket(key)

    def run_all(self) -> None:
        for key in sorted(self.buckets):
            self.run_bucket(key)

    def run_bucket(self, key) -> None:
        items = self.buckets.pop(key)
        out = self.engine._forward(torch.stack([t for _, _, t in items]).float().div_(255))
        for (i, s, _), o in zip(items, out):
            part = self.pending[i]
            part.maps[s] = o
            part.left -= 1
            if part.left == 0:
                del self.pending[i]
                self._finish(i, self.combine(part.maps).numpy())

    def _finish(self, i: int, row: np.ndarray) -> None:
        self.bar.update(1)
        if self.sink is None:
            self.rows[i - self.offset] = row
            return
        self.done.append((i, row))
        if len(self.done) >= self.FLUSH_ROWS or time.monotonic() - self.last_flush > self.FLUSH_SECONDS:
            self.flush_sink()

    def flush_sink(self) -> None:
        """Hand the finished rows to the sink (a cache), if any."""
        self.last_flush = time.monotonic()
        if self.sink is not None and self.done:
            idx, rows = zip(*self.done)
            self.sink(np.array(idx), np.stack(rows))
            self.done.clear()


@contextmanager
def borrowed(model: torch.nn.Module, device: torch.device):
    """Run ``model`` on ``device``, channels_last and in eval mode, then give it back exactly as
    found, also after an error: the very same parameter and buffer tensors (so device, dtype and
    memory format), gradients, and each module's train/eval mode."""
    params = [(p, p.data, p.grad) for p in model.parameters()]
    buffers = [(m, k, b) for m in model.modules() for k, b in m._buffers.items() if b is not None]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model.eval().to(device, memory_format=torch.channels_last)
    finally:
        for p, data, grad in params:
            p.data = data
            p.grad = grad
        for m, k, b in buffers:
            m._buffers[k] = b
        for m, training in modes:
            m.training = training
