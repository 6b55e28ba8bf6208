"""Labelled image sets on disk: an ImageFolder tree or a Hugging Face dataset.

- ImageFolder: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (torchvision's
  ``ImageFolder`` with :func:`vggfeat.data.decode.open_image` as loader).
- ImageNet as it is distributed: ``train/`` as class folders and ``val/`` flat
  (``ILSVRC2012_val_00000001.JPEG`` ...), labelled by Kaggle's ``LOC_val_solution.csv``
  (``ImageId,PredictionString``, the synset is the first token) or by the devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` (line k: the 1-based ILSVRC2012_ID of image k).
  Those IDs follow the devkit's own class order, read from its ``data/meta.mat`` (or a text file
  with one wnid per line in that order); it is *not* the sorted wnid order of the class folders
  (ID 1 is n02119789, the first folder n01440764), so a sorted list such as Kaggle's
  ``LOC_synset_mapping.txt`` is refused for it. The files are found next to the data (the root,
  its ``ILSVRC2012_devkit_t12/data/``, and up to three parent folders) or given explicitly.
- Hugging Face: a ``save_to_disk`` folder (``load_from_disk``) or a hub name, with train and
  validation splits, an Image column and a ClassLabel column.

Images are decoded only by :mod:`vggfeat.data.decode`; the trainer's per-sample view of these
sets is :mod:`vggfeat.train.training_set`.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import DataError
from .decode import IMAGE_EXTENSIONS, hf_image_column, load_image, open_image

log = logging.getLogger("vggfeat")
VAL_SPLITS = ("val", "validation", "valid")
DATA_LAYOUTS = (
    "an ImageFolder root (train/<class>/*, and val/<class>/* or a flat val/ with ILSVRC labels), "
    "a saved Hugging Face DatasetDict folder, or a Hugging Face hub dataset name"
)
KAGGLE_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class LabelledImages(Dataset):
    """``load(i)`` -> (RGB PIL image, label) or raises :class:`vggfeat.errors.ImageError`;
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
        from torchvision.datasets import ImageFolder  # deferred: torchvision.datasets is slow to import

        try:
            self.folder = ImageFolder(str(root), loader=open_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(f"{root}: not an ImageFolder tree (<class>/<image> files): {e}") from None
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
        from datasets import ClassLabel  # deferred: datasets costs seconds to import
        from datasets import Image as HFImage  # deferred: datasets costs seconds to import

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


class ListedImages(LabelledImages):
    """Image files with their labels given by a list (a flat ILSVRC ``val/``)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]):
        self.samples, self.classes = samples, list(classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int):
        path, label = self.samples[i]
        return open_image(path), label

    def name(self, i: int) -> str:
        return self.samples[i][0]

    def labels(self) -> list[int]:
        return [y for _, y in self.samples]


def open_splits(data, *, train_split="train", val_split=None, val_labels=None, val_synsets=None):
    """``data`` (ImageFolder root, saved HF dataset folder, or hub name) -> (train, val) as
    :class:`LabelledImages` sharing one list of classes. ``val_labels``/``val_synsets``: label
    files for a flat ``val/`` (see the module docstring); found next to the data if not given."""
    path = Path(str(data))
    if path.is_dir() and not (path / "dataset_dict.json").exists():
        if not (path / train_split).is_dir():
            raise DataError(
                f"{path}: no {train_split}/ folder and no dataset_dict.json; --data takes {DATA_LAYOUTS}"
            )
        return _folder_splits(path, train_split, val_split, val_labels, val_synsets)
    import datasets  # deferred: datasets costs seconds to import

    if path.exists():
        try:
            dd = datasets.load_from_disk(str(path))
        except Exception as e:
            raise DataError(
                f"{path}: not a saved Hugging Face dataset ({type(e).__name__}); --data takes {DATA_LAYOUTS}"
            ) from None
    elif not _HUB_NAME.match(str(data)):
        raise DataError(f"{data}: no such folder; --data takes {DATA_LAYOUTS}")
    else:
        try:
            dd = datasets.load_dataset(str(data))
        except Exception as e:
            raise DataError(
                f"{data}: no such folder, and no Hugging Face hub dataset of that name could be "
                f"loaded ({type(e).__name__}); --data takes {DATA_LAYOUTS}"
            ) from None
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError(f"{data}: expected a dataset with splits (DatasetDict), got one {type(dd).__name__}")
    val_split = val_split or next((s for s in VAL_SPLITS if s in dd), None)
    if train_split not in dd or val_split not in dd:
        raise DataError(f"{data}: needs splits {train_split!r} and a validation split; it has {list(dd)}")
    return HFImages(dd[train_split]), HFImages(dd[val_split])


def _folder_splits(path: Path, train_split, val_split, val_labels, val_synsets):
    val_split = val_split or next((s for s in VAL_SPLITS if (path / s).is_dir()), None)
    if val_split is None:
        raise DataError(f"{path}: no validation folder; expected one of {VAL_SPLITS} beside {train_split}/")
    train, vdir = FolderImages(path / train_split), path / val_split
    if not any(p.is_dir() for p in vdir.iterdir()):
        return train, flat_val(vdir, train.classes, labels=val_labels, synsets=val_synsets, near=path)
    val = FolderImages(vdir)
    if train.classes != val.classes:
        raise DataError(
            f"{path}: {train_split}/ and {val_split}/ have different class folders "
            f"({len(train.classes)} vs {len(val.classes)}); both need the same <class> names"
        )
    return train, val


def _search_dirs(root: Path) -> list[Path]:
    """Where ILSVRC label files are looked for: the data root, up to three parents (Kaggle keeps
    them three levels above ILSVRC/Data/CLS-LOC), and the devkit's data/ folder in each."""
    dirs = [root, *list(root.resolve().parents)[:3]]
    return [p for d in dirs for p in (d, d / "ILSVRC2012_devkit_t12" / "data")]


def _find(dirs: list[Path], names: tuple[str, ...]) -> Path | None:
    return next((d / n for d in dirs for n in names if (d / n).is_file()), None)


def val_wnids(val_dir: Path, *, labels=None, synsets=None, near: Path) -> tuple[Path, dict[str, str]]:
    """(the label file, {image stem: wnid}) of a flat ILSVRC ``val/``: ``labels`` (Kaggle's CSV or
    the devkit's ground truth, with ``synsets`` for its order) or the first found near ``near``."""
    files = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    dirs = _search_dirs(near)
    found = Path(labels) if labels else _find(dirs, (KAGGLE_SOLUTION, DEVKIT_TRUTH))
    if found is None or not found.is_file():
        raise DataError(
            f"{val_dir} holds {len(files)} images but no class folders, and no labels for them "
            f"{'at ' + str(found) if found else 'were found'}. Either sort them into val/<class>/ "
            f"folders named like train/'s, or give their labels: --val-labels {KAGGLE_SOLUTION} "
            f"(Kaggle), or --val-labels {DEVKIT_TRUTH} with --val-synsets {DEVKIT_META} (the "
            f"ILSVRC2012 devkit's data/ folder). Looked next to the data in {near} and its parents."
        )
    if found.suffix.lower() == ".csv":
        wnids = _kaggle_labels(found)
    else:
        order = Path(synsets) if synsets else _find([found.parent, *dirs], (DEVKIT_META,))
        wnids = _devkit_labels(found, order)
    return found, wnids


def flat_val(val_dir: Path, classes: list[str], *, labels=None, synsets=None, near: Path) -> ListedImages:
    """A flat ``val/`` labelled by an ILSVRC label file; ``classes``: the train folders' wnids."""
    found, wnids = val_wnids(val_dir, labels=labels, synsets=synsets, near=near)
    files = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    index = {c: k for k, c in enumerate(classes)}
    samples, missing = [], []
    for f in files:
        wnid = wnids.get(f.stem)
        if wnid is None:
            missing.append(f.name)
        elif wnid not in index:
            raise DataError(
                f"{found}: {f.name} is labelled {wnid}, which is not one of the {len(classes)} classes"
            )
        else:
            samples.append((str(f), index[wnid]))
    if missing or not samples:
        raise DataError(
            f"{found} labels {len(samples)} of the {len(files)} images in {val_dir}"
            + (f"; none for {missing[0]} and {len(missing) - 1} more" if missing else "")
        )
    log.info("validation labels of %s read from %s", val_dir, found)
    return ListedImages(samples, classes)


def _kaggle_labels(path: Path) -> dict[str, str]:
    """Kaggle's LOC_val_solution.csv: ImageId -> the first synset of its PredictionString."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
        raise DataError(f"{path}: expected Kaggle's columns ImageId,PredictionString")
    return {r["ImageId"]: r["PredictionString"].split()[0] for r in rows}


def _devkit_labels(truth: Path, order: Path | None) -> dict[str, str]:
    """The devkit's ground truth (line k: ILSVRC2012_ID of ILSVRC2012_val_<k>) -> stem: wnid."""
    if order is None or not order.is_file():
        raise DataError(
            f"{truth} numbers the classes in the devkit's order (ILSVRC2012_ID); give that order "
            f"with --val-synsets: the devkit's data/{DEVKIT_META}, or a text file with one wnid per "
            "line in ILSVRC2012_ID order"
        )
    id_to_wnid = _devkit_order(order)
    ids = [int(line) for line in truth.read_text().split()]
    unknown = sorted(set(ids) - set(id_to_wnid))
    if unknown:
        raise DataError(f"{truth}: class IDs {unknown[:5]} are not in {order}")
    return {f"ILSVRC2012_val_{k:08d}": id_to_wnid[i] for k, i in enumerate(ids, start=1)}


def _devkit_order(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid, from the devkit's meta.mat (its leaf synsets) or a wnid list."""
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat  # deferred: scipy adds to start-up

        meta = loadmat(str(path), squeeze_me=True)["synsets"]
        leaves = meta[meta["num_children"] == 0]
        return {int(i): str(w) for i, w in zip(leaves["ILSVRC2012_ID"], leaves["WNID"])}
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) > 2 and wnids == sorted(wnids):
        raise DataError(
            f"{path} lists the synsets in sorted order (the class folders' order, as Kaggle's "
            f"LOC_synset_mapping.txt does), not the devkit's ILSVRC2012_ID order that {DEVKIT_TRUTH} "
            f"uses; pass the devkit's data/{DEVKIT_META}"
        )
    return {k: w for k, w in enumerate(wnids, start=1)}
