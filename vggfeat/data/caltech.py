"""Caltech-101 and Caltech-256 in their official layouts, and the paper's random splits.

Layout (``root`` may be the category folder, its parent, or torchvision's download root)::

    101_ObjectCategories/<class>/image_0001.jpg      (102 folders incl. BACKGROUND_Google)
    256_ObjectCategories/NNN.<name>/NNN_0001.jpg     (257 folders incl. 257.clutter)

Appendix B counts 102 / 257 classes, background / clutter included; torchvision's Caltech101
drops BACKGROUND_Google. Both are supported (``include_background``), the paper's by default.
Some images are grayscale: paths are passed on and the one decoder makes them RGB.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets

from ..errors import CaltechError
from .decode import IMAGE_EXTENSIONS

log = logging.getLogger("vggfeat")

# dataset -> (category folder, background class, train per class, test per class (None = rest))
DATASETS = {
    "caltech101": ("101_ObjectCategories", "BACKGROUND_Google", 30, 50),
    "caltech256": ("256_ObjectCategories", "257.clutter", 60, None),
}
LAYOUT = """Expected the official layout:
  {folder}/<class>/*.jpg   (one folder per class{bg})
under ROOT, ROOT/{dataset} (torchvision's download root) or ROOT itself.
Get it from the Caltech data repository (https://data.caltech.edu), or let torchvision fetch it:
torchvision.datasets.{tv}(ROOT, download=True) (the benchmark script does this with --download;
nothing is downloaded otherwise)."""


def _layout(dataset: str) -> str:
    folder, bg, _, _ = DATASETS[dataset]
    tv = "Caltech101" if dataset == "caltech101" else "Caltech256"
    return LAYOUT.format(folder=folder, bg=f", incl. {bg}", dataset=dataset, tv=tv)


def find_categories(root, dataset: str = "caltech101") -> Path:
    """The category folder (``101_ObjectCategories`` / ``256_ObjectCategories``) under ``root``."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    root, folder = Path(root), DATASETS[dataset][0]
    for cand in (root, root / folder, root / dataset / folder):
        if cand.name == folder and cand.is_dir():
            return cand
    raise CaltechError(f"no {folder} under {root}.\n" + _layout(dataset))


@dataclass
class CaltechData:
    """``images`` (N,) paths, ``labels`` (N,) class indices into ``classes`` (folder names,
    sorted)."""

    dataset: str
    root: Path
    images: list[Path]
    labels: np.ndarray
    classes: list[str]


def load_caltech(
    root, dataset: str = "caltech101", *, include_background: bool = True, limit_per_class: int | None = None
) -> CaltechData:
    """List the images of every class folder (sorted; only image files directly in the folder,
    so Caltech-256's stray sub-folders and non-image files are ignored). ``limit_per_class``
    keeps the first N images of each class (quick runs, not comparable with the paper)."""
    cat = find_categories(root, dataset)
    background = DATASETS[dataset][1]
    classes = sorted(
        d.name for d in cat.iterdir() if d.is_dir() and (include_background or d.name != background)
    )
    images, labels = [], []
    for k, c in enumerate(classes):
        files = sorted(p for p in (cat / c).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        files = files[:limit_per_class]
        images += files
        labels += [k] * len(files)
    if not images:
        raise CaltechError(f"no images in the class folders of {cat}.\n" + _layout(dataset))
    log.info("%s: %d images in %d classes", dataset, len(images), len(classes))
    return CaltechData(dataset, cat, images, np.array(labels, dtype=np.int64), classes)


def caltech_splits(
    labels: np.ndarray, *, n_train: int, n_test: int | None = None, n_splits: int = 3, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Appendix B: ``n_splits`` random splits, each with ``n_train`` training images per class
    and up to ``n_test`` test images per class (None = all the rest). Split ``i`` draws from
    ``numpy.random.default_rng([seed, i])``. Returns (train, test) sorted row indices."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    small = classes[counts <= n_train]
    if small.size:
        raise CaltechError(
            f"{small.size} classes have at most {n_train} images (e.g. class {small[0]} has "
            f"{counts[classes == small[0]][0]}), leaving nothing to test; lower the number of training "
            "images per class (--train-per-class) or raise --limit-per-class"
        )
    splits = []
    for i in range(n_splits):
        rng = np.random.default_rng([seed, i])
        train, test = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            train.append(idx[:n_train])
            test.append(idx[n_train:] if n_test is None else idx[n_train : n_train + n_test])
        splits.append((np.sort(np.concatenate(train)), np.sort(np.concatenate(test))))
    return splits


def download(root, dataset: str) -> Path:
    """Fetch the dataset with torchvision's downloader into ``root/<dataset>``."""

    cls = {"caltech101": datasets.Caltech101, "caltech256": datasets.Caltech256}[dataset]
    log.info("downloading %s into %s", dataset, Path(root) / dataset)
    cls(str(root), download=True)
    return find_categories(root, dataset)
