"""Sec. 2.1: the training set's mean RGB, computed once, sharded over the ranks, and cached.

The mean is the mean over images of each decoded image's mean pixel (every image weighs the
same, as in Caffe's mean file of ILSVRC), in [0, 1]. Every rank sums the per-image means of its
own slice of the images (rank r takes images r, r + world, ...); one all-reduce of (sum of
means, count) gives the same mean to all ranks at the cost of 1/world of the pass, so a first
multi-GPU run on ImageNet does not leave the other ranks waiting at a barrier past the
collective timeout. The result is cached as ``mean_rgb.json`` in the data folder when it is
writable (every later run on that data finds it), else in the run folder, keyed by the images it
was computed over: their number, how many were sampled (``--mean-rgb-images``) and a digest of
the sampled images' names. A cache of another sample (a quick one-image run) is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.decode import to_tensor
from ..data.imagefolder import LabelledImages
from ..errors import ImageError
from ..features.distributed import from_main

log = logging.getLogger("vggfeat")
CACHE_FILE = "mean_rgb.json"


class _ImageMeans(Dataset):
    def __init__(self, images: LabelledImages, indices):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:

        try:
            img, _ = self.images.load(self.indices[k])
        except ImageError as e:
            log.warning("mean RGB: skipping %s", e)
            return torch.full((3,), math.nan, dtype=torch.float64)
        return to_tensor(img).double().mean(dim=(1, 2)) / 255.0


def sample_indices(n: int, max_images: int | None = None) -> list[int]:
    """All of ``range(n)``, or ``max_images`` evenly spaced indices (deterministic)."""
    if n == 0:
        raise ValueError("mean RGB: the training set is empty")
    m = n if max_images is None else max(1, min(n, int(max_images)))
    return [int(k * n / m) for k in range(m)]


def mean_sums(images: LabelledImages, indices, *, num_workers: int = 0, batch_size: int = 64) -> torch.Tensor:
    """(4,) float64: the sums of the per-image mean R, G, B over ``indices`` and how many images
    were decoded (unreadable ones are skipped)."""
    loader = DataLoader(_ImageMeans(images, list(indices)), batch_size=batch_size, num_workers=num_workers)
    total = torch.zeros(4, dtype=torch.float64)
    for means in loader:
        means = means[~means.isnan().any(dim=1)]
        total += torch.cat([means.sum(dim=0), torch.tensor([float(len(means))], dtype=torch.float64)])
    return total


def _mean(total: torch.Tensor) -> tuple[float, float, float]:
    if total[3] == 0:
        raise ImageError("mean RGB: none of the training images could be decoded")
    return tuple(float(v) for v in total[:3] / total[3])


def compute_mean_rgb(images: LabelledImages, *, max_images: int | None = None, num_workers: int = 0):
    """The mean RGB of ``images`` in one process: ``max_images`` evenly spaced images or all."""
    return _mean(mean_sums(images, sample_indices(len(images), max_images), num_workers=num_workers))


def cache_paths(data: str, run_dir) -> list[Path]:
    """Where a cached mean is looked for, in order; the first writable one is where it is written."""
    root = Path(str(data))
    own = [root / CACHE_FILE] if root.is_dir() else []
    return own + [Path(run_dir) / CACHE_FILE]


def sample_key(images: LabelledImages, indices) -> dict:
    """What a mean is computed over: the image count, the sample's size and its names' digest."""
    h = hashlib.blake2b(digest_size=16)
    for i in indices:
        h.update(images.name(i).encode())
        h.update(b"\0")
    return dict(images=len(images), sampled=len(indices), sample_digest=h.hexdigest())


def _read_cache(paths: list[Path], key: dict):
    for path in paths:
        if not path.is_file():
            continue
        cached = json.loads(path.read_text())
        held = {k: cached.get(k) for k in key}
        if held != key:
            log.warning("%s is the mean of another sample (%s, now %s): recomputing", path, held, key)
            continue
        log.info("mean RGB read from %s", path)
        return tuple(float(v) for v in cached["mean_rgb"])
    return None


def _write_cache(paths: list[Path], mean, record: dict) -> Path:
    for path in paths:
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"mean_rgb": list(mean), **record}, indent=1))
        tmp.replace(path)
        log.info("mean RGB %s written to %s", [round(v, 4) for v in mean], path)
        return path
    raise OSError(f"mean RGB: none of {[str(p.parent) for p in paths]} is writable")


def shared_mean_rgb(images: LabelledImages, *, data: str, run_dir, state, max_images=None, num_workers=0):
    """Collective: the cached mean RGB, or computed over all ranks of ``state`` (an Accelerator or
    PartialState) and cached by the main process."""
    from accelerate.utils import reduce  # deferred: accelerate adds to start-up

    paths = cache_paths(data, run_dir)
    indices = sample_indices(len(images), max_images)
    # The main process decides, so that all ranks agree even while another job writes the cache.
    key = sample_key(images, indices) if state.is_main_process else None
    cached = from_main(state, lambda: _read_cache(paths, key))
    if cached is not None:
        return cached
    total = mean_sums(images, indices[state.process_index :: state.num_processes], num_workers=num_workers)
    if state.num_processes > 1:
        total = reduce(total.to(state.device), reduction="sum").cpu()
    mean = _mean(total)
    if state.is_main_process:
        _write_cache(paths, mean, {**key, "processes": state.num_processes})
    state.wait_for_everyone()
    return mean
