"""PASCAL VOC's tasks read from the official devkit (:mod:`vggfeat.data.voc_devkit`): image
classification (:func:`load_voc`) and the VOC2012 action task (:func:`load_voc_actions`, one
sample per person box), the SVM protocol of each year (:func:`protocol`), and devkit-format result
files for the evaluation server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VOCError
from .decode import load_image
from .voc_devkit import (
    ACTION_LAYOUT,
    ACTIONS,
    LAYOUT,
    VOC_CLASSES,
    VOCObject,
    find_year_dir,
    labels_from_objects,
    read_annotation,
    read_ids,
    read_labels,
)

log = logging.getLogger("vggfeat")
__all__ = [
    "VOCData", "load_voc", "annotated_classes", "check_classes",
    "ActionData", "load_voc_actions", "person_crops", "competition", "write_results", "Protocol",
    "protocol",
]  # fmt: skip


def _split_labels(year_dir: Path, split: str, ids: list[str], classes) -> np.ndarray:
    main = year_dir / "ImageSets" / "Main"
    files = [main / f"{c}_{split}.txt" for c in classes]
    if all(f.is_file() for f in files):
        labels = np.empty((len(ids), len(classes)), dtype=np.int8)
        for k, f in enumerate(files):
            lab = read_labels(f)
            missing = [i for i in ids if i not in lab]
            if missing:
                raise VOCError(f"{f} has no label for {len(missing)} ids of {split}.txt (e.g. {missing[0]})")
            labels[:, k] = [lab[i] for i in ids]
        return labels
    log.info("VOC%s %s: class files absent, labels from Annotations/*.xml", year_dir.name[3:], split)
    return np.stack(
        [labels_from_objects(read_annotation(year_dir / "Annotations" / f"{i}.xml"), classes) for i in ids]
    )


def annotated_classes(year_dir: Path) -> set[str]:
    """The object names that occur in ``Annotations/*.xml``."""
    return {o.name for f in sorted((year_dir / "Annotations").glob("*.xml")) for o in read_annotation(f)}


def check_classes(year_dir: Path, classes, labels: np.ndarray) -> None:
    """Refuse class names that no annotation holds (their APs would all be NaN), naming those
    found in ``Annotations/``; a class that occurs there but not in the images read (a short
    ``max_images`` run) only warns. Annotations are read only when some class has no image."""
    empty = [c for k, c in enumerate(classes) if not (labels[:, k] >= 0).any()]
    if not empty:
        return
    found = annotated_classes(year_dir)
    unknown = [c for c in empty if c not in found]
    if unknown:
        raise VOCError(
            f"--classes {' '.join(unknown)}: no object of these classes in {year_dir / 'Annotations'}; "
            f"the classes found in its XML files are: {', '.join(sorted(found))}"
        )
    log.warning("VOC: no image read holds %s; their APs will be NaN", ", ".join(empty))


@dataclass
class VOCData:
    """Images of several splits, each image once: ``ids`` (N,), ``images`` (N,) paths,
    ``labels`` (N, K) int8 in {1, -1, 0} (rows of unlabelled splits are 0), ``splits`` maps a
    split name to row indices in file order, ``labelled`` the splits that have ground truth."""

    year: int
    root: Path
    ids: list[str]
    images: list[Path]
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    labelled: set[str]
    classes: tuple[str, ...] = VOC_CLASSES


def load_voc(
    root,
    year: int = 2007,
    *,
    splits=("train", "val", "test"),
    max_images: int | None = None,
    classes=VOC_CLASSES,
) -> VOCData:
    """Read ``splits`` of VOC``year`` (a split whose ``<split>.txt`` is absent is skipped, except
    train and val which are required); ``trainval`` is added as train + val. ``max_images``
    keeps the first N ids of each split (quick runs, not comparable with the paper)."""
    year_dir = find_year_dir(root, year)
    main = year_dir / "ImageSets" / "Main"
    index: dict[str, int] = {}
    rows, split_idx, labelled = [], {}, set()
    for split in splits:
        f = main / f"{split}.txt"
        if not f.is_file():
            if split in ("train", "val"):
                raise VOCError(f"{f} is missing.\n" + LAYOUT.format(year=year, action=""))
            log.info("VOC%d: no %s split (%s absent)", year, split, f)
            continue
        ids = read_ids(f)[:max_images]
        has_gt = not (year >= 2008 and split == "test")  # VOC2008+ test labels are not public
        lab = (
            _split_labels(year_dir, split, ids, classes)
            if has_gt
            else np.zeros((len(ids), len(classes)), np.int8)
        )
        for i, row in zip(ids, lab):
            if i not in index:
                index[i] = len(rows)
                rows.append((i, row))
        split_idx[split] = np.array([index[i] for i in ids], dtype=np.int64)
        if has_gt:
            labelled.add(split)
    if "train" in split_idx and "val" in split_idx:
        split_idx["trainval"] = np.unique(np.r_[split_idx["train"], split_idx["val"]])
        labelled.add("trainval")
    images = [year_dir / "JPEGImages" / f"{i}.jpg" for i, _ in rows]
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise VOCError(
            f"{len(missing)} images listed in {main} are missing from {year_dir / 'JPEGImages'} "
            f"(e.g. {missing[0].name}).\n" + LAYOUT.format(year=year, action="")
        )
    labels = np.stack([r for _, r in rows]) if rows else np.zeros((0, len(classes)), np.int8)
    known = [split_idx[s] for s in labelled]  # an unlabelled split's zeros say nothing
    check_classes(year_dir, classes, labels[np.unique(np.concatenate(known))] if known else labels[:0])
    return VOCData(year, year_dir, [i for i, _ in rows], images, labels, split_idx, labelled, tuple(classes))


@dataclass
class ActionData:
    """VOC2012 action samples, one per annotated person: ``ids`` / ``objidx`` (1-based object
    index in the XML), ``images`` (path per sample), ``boxes`` (N, 4) 1-based inclusive,
    ``labels`` (N, 10) in {1, -1, 0}, ``splits`` row indices."""

    ids: list[str]
    objidx: list[int]
    images: list[Path]
    boxes: np.ndarray
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    actions: tuple[str, ...] = ACTIONS


def _action_rows(year_dir: Path, split: str, actions) -> list[tuple[str, int, list[int]]]:
    folder = year_dir / "ImageSets" / "Action"
    files = [folder / f"{a}_{split}.txt" for a in actions]
    if all(f.is_file() for f in files):
        table: dict[tuple[str, int], list[int]] = {}
        for k, f in enumerate(files):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise VOCError(f"{f}, line {n}: expected '<id> <objidx> <label>', got {line!r}")
                table.setdefault((parts[0], int(parts[1])), [0] * len(actions))[k] = int(parts[2])
        return [(i, j, lab) for (i, j), lab in table.items()]
    ids_file = folder / f"{split}.txt"
    if not ids_file.is_file():
        raise VOCError(
            f"no action labels for split {split!r} in {folder}.\n"
            + LAYOUT.format(year=2012, action=ACTION_LAYOUT)
        )
    log.info("VOC2012 action %s: action files absent, labels from Annotations/*.xml", split)
    rows = []
    for i in read_ids(ids_file):
        for j, o in enumerate(read_annotation(year_dir / "Annotations" / f"{i}.xml"), 1):
            if o.actions:
                rows.append((i, j, [1 if o.actions.get(a, 0) else -1 for a in actions]))
    return rows


def load_voc_actions(
    root, *, splits=("train", "val"), max_images: int | None = None, actions=ACTIONS
) -> ActionData:
    """Read the VOC2012 action task: one sample per (image, person) with its box from the XML.
    ``max_images`` keeps the first N samples of each split."""
    year_dir = find_year_dir(root, 2012, action=True)
    ids, objidx, boxes, labels, split_idx = [], [], [], [], {}
    cache: dict[str, list[VOCObject]] = {}
    for split in splits:
        rows = _action_rows(year_dir, split, actions)[:max_images]
        start = len(ids)
        for i, j, lab in rows:
            if i not in cache:
                cache[i] = read_annotation(year_dir / "Annotations" / f"{i}.xml")
            objs = cache[i]
            if not 1 <= j <= len(objs) or objs[j - 1].box is None:
                raise VOCError(
                    f"Annotations/{i}.xml has no object {j} with a bndbox (listed in ImageSets/Action)"
                )
            ids.append(i)
            objidx.append(j)
            boxes.append(objs[j - 1].box)
            labels.append(lab)
        split_idx[split] = np.arange(start, len(ids))
    images = [year_dir / "JPEGImages" / f"{i}.jpg" for i in ids]
    return ActionData(
        ids, objidx, images, np.array(boxes, dtype=np.int64).reshape(-1, 4),
        np.array(labels, dtype=np.int8).reshape(-1, len(actions)), split_idx, tuple(actions),
    )  # fmt: skip


def person_crops(data: ActionData) -> list:
    """The person box of every sample cut out of its image, as RGB PIL images (decoded by
    :func:`vggfeat.data.decode.load_image`, the one decoding path)."""

    crops, last = [], (None, None)
    for path, (x0, y0, x1, y1) in zip(data.images, data.boxes):
        if last[0] != path:
            last = (path, load_image(path, str(path)))
        img = last[1]
        # 1-based inclusive pixel box -> PIL's 0-based half-open box, clamped to the image
        box = (max(0, x0 - 1), max(0, y0 - 1), min(img.width, x1), min(img.height, y1))
        crops.append(img.crop(box))
    return crops


def competition(weights) -> str:
    """The VOC evaluation server's classification competition for a run whose nets had
    ``weights`` (None = random init): comp1 allows VOC's own training data only, comp2 any outside
    data, which pretrained weights (ImageNet, or any other training) are."""
    return "comp1" if all(w is None for w in weights) else "comp2"


def write_results(
    out_dir, ids, scores: np.ndarray, classes=VOC_CLASSES, *, comp="comp2", split="test"
) -> list[Path]:
    """Devkit result files for the evaluation server: ``<out_dir>/<comp>_cls_<split>_<class>.txt``
    with lines ``<id> <score>`` (``scores`` (N, K), one row per id). ``comp``: see
    :func:`competition`; features of ImageNet-pretrained nets are comp2."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, c in enumerate(classes):
        p = out_dir / f"{comp}_cls_{split}_{c}.txt"
        p.write_text("".join(f"{i} {s:.6f}\n" for i, s in zip(ids, scores[:, k])))
        paths.append(p)
    return paths


@dataclass
class Protocol:
    """Row indices of a :class:`VOCData` for the SVM protocol: C is chosen by training on
    ``select[0]`` and scoring ``select[1]``, the SVMs are refit on ``fit`` and evaluated on
    ``test`` with ``ap`` ("voc07" or "voc12"); ``submit`` = (fit, score) rows for the
    evaluation-server files when the test labels are hidden."""

    select: tuple[np.ndarray, np.ndarray]
    fit: np.ndarray
    test: np.ndarray
    ap: str
    description: str
    submit: tuple[np.ndarray, np.ndarray] | None = None


def protocol(data: VOCData, *, holdout: float = 0.2, seed: int = 0) -> Protocol:
    """Sec. B protocol per year. VOC2007: C by train -> val, refit on trainval, test on test,
    11-point AP. VOC2008+ (test labels hidden): report on val, so C is chosen on a random
    ``holdout`` of train (never on val, which would select on the reported images), SVMs trained
    on train, AP by the VOC2010+ rule for 2010+; the test split, when present, is scored by SVMs
    refit on trainval for the evaluation server."""
    s = data.splits
    ap = "voc07" if data.year < 2010 else "voc12"
    if "test" in data.labelled:
        return Protocol(
            (s["train"], s["val"]), s["trainval"], s["test"], ap,
            f"C chosen on train -> val; SVMs trained on trainval, tested on test ({ap} AP)",
        )  # fmt: skip
    if data.year == 2007:
        raise VOCError(
            f"VOC2007 test split missing under {data.root} (ImageSets/Main/test.txt): download "
            "VOCtest_06-Nov-2007.tar or use --download.\n" + LAYOUT.format(year=2007, action="")
        )
    perm = np.random.default_rng(seed).permutation(s["train"])
    n_val = max(1, int(round(holdout * len(perm))))
    select = (np.sort(perm[n_val:]), np.sort(perm[:n_val]))
    submit = (s["trainval"], s["test"]) if "test" in s else None
    return Protocol(
        select, s["train"], s["val"], ap,
        f"test labels are not public: reported on val; C chosen on {holdout:.0%} of train held out; "
        f"SVMs trained on train ({ap} AP)",
        submit,
    )  # fmt: skip
