"""The trainer's view of a labelled set: seeded per-sample transforms, and a collate that skips
unreadable images.

An unreadable image never stops training: :class:`TrainingSet` returns a :class:`Skipped` marker
and :class:`SkippingCollate` drops it (training) or keeps its slot masked out (validation), so the
run can count and list them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..data.imagefolder import LabelledImages
from ..errors import ImageError
from .transforms import sample_rng


@dataclass(frozen=True)
class Skipped:
    """Stands in for a sample whose image could not be decoded."""

    index: int
    message: str


class TrainingSet(Dataset):
    """(transformed image, label) per index; each sample's randomness is seeded from
    (seed, epoch, index) (see :func:`vggfeat.train.transforms.sample_rng`). The epoch lives in shared
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
