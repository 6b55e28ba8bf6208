"""The PASCAL VOC devkit's files: where a year's folder is, its id and label lists, its XML
annotations, and torchvision's downloader for it.

Layout (``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC<year>``)::

    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    VOCdevkit/VOC2007/Annotations/<id>.xml
    VOCdevkit/VOC2007/ImageSets/Main/<split>.txt            lines "<id>"
    VOCdevkit/VOC2007/ImageSets/Main/<class>_<split>.txt    lines "<id> <label>", label 1/-1/0
    VOCdevkit/VOC2012/ImageSets/Action/<action>_<split>.txt lines "<id> <objidx> <label>"

Labels: 1 = the class is present, -1 = absent, 0 = "difficult" (only difficult objects of the
class). When the class files are missing they are derived from the XML ``difficult`` flags by
the same rule. VOC2012 test labels are not public: that split is loaded unlabelled.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VOCError

log = logging.getLogger("vggfeat")

# Devkit order: mAP and every table follow it.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
ACTIONS = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse", "running",
    "takingphoto", "usingcomputer", "walking",
)  # fmt: skip

LAYOUT = """Expected the official devkit layout:
  VOCdevkit/VOC{year}/JPEGImages/<id>.jpg
  VOCdevkit/VOC{year}/Annotations/<id>.xml
  VOCdevkit/VOC{year}/ImageSets/Main/<split>.txt and <class>_<split>.txt{action}
Get it from the PASCAL VOC website (http://host.robots.ox.ac.uk/pascal/VOC/), or let torchvision
fetch it: torchvision.datasets.VOCDetection(ROOT, year="{year}", image_set="trainval", download=True)
(the benchmark scripts do this with --download; nothing is downloaded otherwise)."""
ACTION_LAYOUT = "\n  VOCdevkit/VOC2012/ImageSets/Action/<action>_<split>.txt (lines '<id> <objidx> <label>')"


def find_year_dir(root, year: int, *, action: bool = False) -> Path:
    """The ``VOC<year>`` folder under ``root`` (see the module docstring for what root may be)."""
    root = Path(root)
    for cand in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (cand / "ImageSets").is_dir() and cand.name == f"VOC{year}":
            return cand
    raise VOCError(
        f"no VOC{year} data under {root}.\n"
        + LAYOUT.format(year=year, action=ACTION_LAYOUT if action else "")
    )


def read_ids(path) -> list[str]:
    """``<split>.txt``: one image id per line."""
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def read_labels(path) -> dict[str, int]:
    """``<class>_<split>.txt``: ``<id> <label>`` with right-aligned labels, so split() on
    whitespace (a fixed column would break on ``-1`` versus `` 1``)."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise VOCError(f"{path}, line {n}: expected '<id> <label>' with label 1, -1 or 0, got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


@dataclass
class VOCObject:
    """One ``<object>`` of an annotation: class name, difficult flag, 1-based inclusive pixel
    box (xmin, ymin, xmax, ymax) and, for action images, {action: 0/1}."""

    name: str
    difficult: bool
    box: tuple[int, int, int, int] | None
    actions: dict[str, int] = field(default_factory=dict)


def read_annotation(path) -> list[VOCObject]:
    """The objects of an ``Annotations/<id>.xml`` file, in file order (the action task's
    ``objidx`` counts them from 1)."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as e:
        raise VOCError(f"{path}: cannot read annotation ({e})") from None
    objects = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        box = (
            tuple(int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            if bb is not None
            else None
        )
        acts = obj.find("actions")
        actions = {a.tag: int(float(a.text or 0)) for a in acts} if acts is not None else {}
        objects.append(
            VOCObject(
                name=(obj.findtext("name") or "").strip(),
                difficult=(obj.findtext("difficult") or "0").strip() == "1",
                box=box,
                actions=actions,
            )
        )
    return objects


def labels_from_objects(objects: list[VOCObject], classes=VOC_CLASSES) -> np.ndarray:
    """The devkit's rule: 1 if any non-difficult object of the class, 0 if all of them are
    difficult, -1 if none -> (K,) int8."""
    out = np.full(len(classes), -1, dtype=np.int8)
    for k, c in enumerate(classes):
        objs = [o for o in objects if o.name == c]
        if objs:
            out[k] = 0 if all(o.difficult for o in objs) else 1
    return out


def download(root, year: int) -> Path:
    """Fetch VOC``year`` with torchvision's downloader into ``root`` (VOCdevkit or its parent):
    trainval, plus test for 2007 (the only year whose test set is public)."""
    from torchvision.datasets import VOCDetection  # deferred: torchvision.datasets is slow to import

    root = Path(root)
    base = root.parent if root.name == "VOCdevkit" else root
    for image_set in ("trainval", "test") if year == 2007 else ("trainval",):
        log.info("downloading VOC%d %s into %s", year, image_set, base)
        VOCDetection(str(base), year=str(year), image_set=image_set, download=True)
    return base / "VOCdevkit" / f"VOC{year}"
