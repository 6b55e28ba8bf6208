"""Labelled training data for the trainer: an ImageFolder tree or a Hugging Face dataset.

- ImageFolder: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (torchvision's
  ``ImageFolder`` with :func:`vggfeat.data.open_image` as loader).
- Hugging Face: a ``save_to_disk`` folder (``load_from_disk``) or a hub name, with train and
  validation splits, an Image column and a ClassLabel column.

Images are decoded only by :mod:`vggfeat.data`. An unreadable image never stops training:
:class:`TrainingSet` returns a :class:`Skipped` marker and :class:`SkippingCollate` drops it
(training) or keeps its slot masked out (validation), so the run can count and list them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .data import ImageError, hf_image_column, load_image, open_image
from .transforms import sample_rng

log = logging.getLogger("vggfeat")
VAL_SPLITS = ("val", "validation", "valid")


class LabelledImages(Dataset):
    """``load(i)`` -> (RGB PIL image, label) or raises :class:`vggfeat.data.ImageError`;
    ``name(i)`` names the sample in messages; ``classes`` lists the class names."""

    classes: list[str]

    def load(self, i: int):
        raise NotImplementedError

    def name(self, i: int) -> str:
        return f"sample #{i}"

    def __getitem__(self, i: int):
        return self.load(i)


class FolderImages(LabelledImages):
    def __init__(self, root):
        from torchvision.datasets import ImageFolder

        try:
            self.folder = ImageFolder(str(root), loader=open_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise ImageError(f"{root}: not an ImageFolder tree (<class>/<image> files): {e}") from None
        self.classes = list(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder)

    def load(self, i: int):
        return self.folder[i]  # open_image raises ImageError naming the file

    def name(self, i: int) -> str:
        return self.folder.samples[i][0]

    def labels(self) -> list[int]:
        return list(self.folder.targets)


class HFImages(LabelledImages):
    def __init__(self, ds, *, image_column: str | None = None, label_column: str | None = None):
        from datasets import ClassLabel
        from datasets import Image as HFImage

        self.image_column = image_column or hf_image_column(ds)
        labels = [k for k, f in ds.features.items() if isinstance(f, ClassLabel)]
        self.label_column = label_column or (labels[0] if labels else "label")
        if self.label_column not in ds.column_names:
            raise ValueError(
                f"the dataset has no label column {self.label_column!r} (columns: {ds.column_names}); "
                "pass label_column="
            )
        feature = ds.features[self.label_column]
        self.classes = list(feature.names) if isinstance(feature, ClassLabel) else None
        # Undecoded bytes, so that decoding goes through vggfeat.data like every other input.
        self.ds = ds.cast_column(self.image_column, HFImage(decode=False))
        if self.classes is None:
            self.classes = [str(c) for c in sorted(set(self.ds[self.label_column]))]

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, i: int):
        row = self.ds[int(i)]
        return load_image(row[self.image_column], self.name(i)), int(row[self.label_column])

    def name(self, i: int) -> str:
        return f"row {i}"

    def labels(self) -> list[int]:
        return [int(v) for v in self.ds[self.label_column]]


def open_splits(data, *, train_split: str = "train", val_split: str | None = None):
    """``data`` (ImageFolder root, saved HF dataset folder, or hub name) -> (train, val) as
    :class:`LabelledImages` sharing one list of classes."""
    path = Path(str(data))
    if path.is_dir() and (path / train_split).is_dir() and not (path / "dataset_dict.json").exists():
        val_split = val_split or next((s for s in VAL_SPLITS if (path / s).is_dir()), None)
        if val_split is None:
            raise ImageError(
                f"{path}: no validation folder; expected one of {VAL_SPLITS} beside {train_split}/"
            )
        train, val = FolderImages(path / train_split), FolderImages(path / val_split)
        if train.classes != val.classes:
            raise ImageError(
                f"{path}: {train_split}/ and {val_split}/ have different class folders "
                f"({len(train.classes)} vs {len(val.classes)}); both need the same <class> names"
            )
        return train, val
    import datasets

    dd = datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(str(data))
    if not isinstance(dd, datasets.DatasetDict):
        raise ValueError(f"{data}: expected a dataset with splits (DatasetDict), got one {type(dd).__name__}")
    val_split = val_split or next((s for s in VAL_SPLITS if s in dd), None)
    if train_split not in dd or val_split not in dd:
        raise ValueError(f"{data}: needs splits {train_split!r} and a validation split; it has {list(dd)}")
    return HFImages(dd[train_split]), HFImages(dd[val_split])


@dataclass(frozen=True)
class Skipped:
    """Stands in for a sample whose image could not be decoded."""

    index: int
    message: str


class TrainingSet(Dataset):
    """(transformed image, label) per index; each sample's randomness is seeded from
    (seed, epoch, index) (see :func:`vggfeat.transforms.sample_rng`). The epoch lives in shared
    memory so that persistent DataLoader workers see :meth:`set_epoch`."""

    def __init__(self, images: LabelledImages, transform, *, seed: int = 0):
        self.images, self.transform, self.seed = images, transform, int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __getitem__(self, i: int):
        with sample_rng(self.seed, int(self._epoch), i):
            try:
                img, label = self.images.load(i)
            except ImageError as e:
                return Skipped(int(i), str(e))
            return self.transform(img), label


class SkippingCollate:
    """Batches (image, label) pairs; :class:`Skipped` entries are dropped (``keep_slots=False``,
    training) or replaced by a zero image with ``valid=False`` (validation, so that
    ``gather_for_metrics`` still sees equal batch shapes on every process).
    Returns ``(images (B, 3, H, W), labels (B,), valid (B,) bool, skipped messages)``."""

    def __init__(self, image_shape: tuple[int, int, int], *, keep_slots: bool = False):
        self.image_shape, self.keep_slots = tuple(image_shape), keep_slots

    def __call__(self, batch):
        skipped = [s.message for s in batch if isinstance(s, Skipped)]
        if self.keep_slots:
            zero = (torch.zeros(self.image_shape), -1)
            batch = [zero if isinstance(s, Skipped) else s for s in batch]
        else:
            batch = [s for s in batch if not isinstance(s, Skipped)]
        if not batch:
            empty = torch.zeros(0, dtype=torch.long)
            return torch.zeros((0, *self.image_shape)), empty, empty.bool(), skipped
        images = torch.stack([torch.as_tensor(x) for x, _ in batch])
        labels = torch.tensor([y for _, y in batch], dtype=torch.long)
        return images, labels, labels >= 0, skipped


class _ImageMeans(Dataset):
    def __init__(self, images: LabelledImages, indices):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        from .data import to_tensor

        try:
            img, _ = self.images.load(self.indices[k])
        except ImageError as e:
            log.warning("mean RGB: skipping %s", e)
            return torch.full((3,), math.nan, dtype=torch.float64)
        return to_tensor(img).double().mean(dim=(1, 2)) / 255.0


def compute_mean_rgb(
    images: LabelledImages, *, max_images: int | None = None, num_workers: int = 0, batch_size: int = 64
) -> tuple[float, float, float]:
    """Sec. 2.1: the training set's mean RGB in [0, 1], for :meth:`vggfeat.Preprocess.mean_rgb`.

    The mean over images of each decoded image's mean pixel (every image weighs the same, as in
    Caffe's mean file of ILSVRC). ``max_images``: use that many evenly spaced images (the mean of
    a few thousand ImageNet images is within 1e-3 of the full mean). Unreadable images are skipped.
    """
    n = len(images)
    if n == 0:
        raise ValueError("compute_mean_rgb: the dataset is empty")
    m = n if max_images is None else max(1, min(n, int(max_images)))
    indices = [int(k * n / m) for k in range(m)]
    loader = DataLoader(_ImageMeans(images, indices), batch_size=batch_size, num_workers=num_workers)
    means = torch.cat(list(loader))
    means = means[~means.isnan().any(dim=1)]
    if len(means) == 0:
        raise ImageError("compute_mean_rgb: none of the images could be decoded")
    return tuple(float(v) for v in means.mean(dim=0))


def cached_mean_rgb(images: LabelledImages, path, **kwargs) -> tuple[float, float, float]:
    """The mean RGB stored as JSON at ``path``, computed with :func:`compute_mean_rgb` and
    written there on first use."""
    path = Path(path)
    if path.exists():
        return tuple(float(v) for v in json.loads(path.read_text())["mean_rgb"])
    mean = compute_mean_rgb(images, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"mean_rgb": list(mean), "images": len(images)}, indent=1))
    tmp.replace(path)
    log.info("mean RGB %s written to %s", [round(v, 4) for v in mean], path)
    return mean
