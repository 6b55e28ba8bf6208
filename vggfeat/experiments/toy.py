"""Deterministic procedural datasets in the real on-disk layouts, for demos and tests: a source
classification set (ImageFolder: one textured shape per image, on clutter) and a multi-label
target set (the VOC2007 devkit layout: compositions of two source primitives). Every image is
drawn from its own generator seeded by ``(seed, set, index)``. The design, its scale rules and
how they were chosen are in docs/toy-data.md.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..evaluation.paper import VOC_Q
from ..nets.models import paper_scale
from ..options import option
from .toy_draw import SHAPES, TEXTURES, clutter, draw_part, finish

log = logging.getLogger("vggfeat")

VERSION = 5  # bump when drawing changes, so stale generated data is regenerated
SOURCE_CLASSES = tuple(f"{t}-{s}" for s in SHAPES for t in TEXTURES)
# Target classes: (first part, second part, arrangement); parts are (shape, texture).
TARGET_CLASSES = {
    "house": (("triangle", "solid"), ("square", "checker"), "above"),
    "snowman": (("circle", "solid"), ("circle", "dots"), "above"),
    "tree": (("star", "solid"), ("square", "stripes"), "above"),
    "lamp": (("triangle", "stripes"), ("cross", "solid"), "above"),
    "kite": (("diamond", "checker"), ("cross", "dots"), "above"),
    "robot": (("square", "dots"), ("square", "solid"), "above"),
    "flag": (("cross", "checker"), ("square", "solid"), "beside"),
    "eyes": (("circle", "stripes"), ("circle", "stripes"), "beside"),
    "bowtie": (("triangle", "dots"), ("diamond", "dots"), "beside"),
    "medal": (("circle", "solid"), ("star", "checker"), "inside"),
}
# Context colours of the target classes (hues spread around the wheel), see the module docstring.
CONTEXT = {
    name: tuple(int(255 * v) for v in colorsys.hsv_to_rgb(k / len(TARGET_CLASSES), 0.55, 0.8))
    for k, name in enumerate(TARGET_CLASSES)
}
CONTEXT_P = 0.6  # share of target images whose background takes a present class's colour
# VOC-like: a few distinct (width, height) sizes, landscape more often than portrait.
TARGET_SIZES = ((192, 144), (192, 128), (160, 160), (144, 192), (176, 144))
SOURCE_SIZES = ((128, 128), (144, 128), (128, 144))
SOURCE_OBJECT = (0.4, 0.8)  # object side as a fraction of the smaller image side, log-uniform
DISTRACTOR_SIDE = (0.4, 0.7)  # a distractor's side as a fraction of the labelled object's, uniform
# The scale rules of the module docstring, in numbers (crop 64: S in [73, 146], Q 73 ... 219).
DEMO_CROP = 64
TRAIN_S_MID = paper_scale(DEMO_CROP, 384)  # 110: the middle of the jittered S in [73, 146]
TEST_Q = tuple(paper_scale(DEMO_CROP, q) for q in VOC_Q)  # 73, 110, 146, 183, 219
TARGET_SPREAD = 10.0  # target parts span this factor (the source net's range: about 4)
_PART_MID = math.sqrt(SOURCE_OBJECT[0] * SOURCE_OBJECT[1]) * TRAIN_S_MID / TEST_Q[len(TEST_Q) // 2]
# side of one part of a composition as a fraction of the smaller image side, log-uniform (0.13-1.35)
TARGET_PART = (_PART_MID / math.sqrt(TARGET_SPREAD), _PART_MID * math.sqrt(TARGET_SPREAD))
DIFFICULT_SIDE = 20  # px: objects whose longer visible side is smaller are "difficult"
DIFFICULT_VISIBLE = 0.25  # objects with less of their box inside the image are "difficult"
SPLITS = ("train", "val", "test")


# --- drawing -------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def render_source(
    rng: np.random.Generator, label: int, size: tuple[int, int], distractors: int = 0
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """One source image of class ``SOURCE_CLASSES[label]`` (w, h = ``size``) and the object's
    box (x0, y0, w, h) in px. ``distractors`` smaller objects of other source classes lie behind
    it anywhere in the image (:data:`DISTRACTOR_SIDE`), as other things do in an ImageNet photo:
    the net must then tell the labelled object from them. With none, nothing extra is drawn
    from ``rng``, so the image is the same bytes as without the option."""
    texture, shape = SOURCE_CLASSES[label].split("-")
    w, h = size
    canvas = clutter(rng, w, h)
    side = _log_uniform(rng, *SOURCE_OBJECT) * min(w, h)
    for _ in range(distractors):
        other = SOURCE_CLASSES[(label + 1 + rng.integers(len(SOURCE_CLASSES) - 1)) % len(SOURCE_CLASSES)]
        d = side * rng.uniform(*DISTRACTOR_SIDE)
        dt, ds = other.split("-")
        draw_part(canvas, rng, ds, dt, (rng.uniform(-d / 2, w - d / 2), rng.uniform(-d / 2, h - d / 2), d, d))
    ow, oh = side * rng.uniform(0.85, 1.15), side * rng.uniform(0.85, 1.15)
    # Near the centre, as photographed objects are: training crops (Sec. 3.1) then still see it.
    x0, y0 = (w - ow) / 2 + rng.uniform(-0.1, 0.1) * w, (h - oh) / 2 + rng.uniform(-0.1, 0.1) * h
    x0, y0 = min(max(x0, -0.1 * ow), w - 0.9 * ow), min(max(y0, -0.1 * oh), h - 0.9 * oh)
    draw_part(canvas, rng, shape, texture, (x0, y0, ow, oh))
    return finish(canvas), (x0, y0, ow, oh)


def _composition_parts(name: str, x0: float, y0: float, s: float, rng) -> tuple[list, tuple]:
    """The two part boxes of a target object of unit size ``s`` px at (x0, y0), and its box."""
    (s1, t1), (s2, t2), how = TARGET_CLASSES[name]
    j = lambda: s * rng.uniform(0.9, 1.1)  # noqa: E731 - each part slightly varies in size
    if how == "above":
        a, b = j(), j()
        parts = [(s1, t1, (x0 + (b - a) / 2, y0, a, a)), (s2, t2, (x0, y0 + a, b, b))]
        box = (x0 + min(0, (b - a) / 2), y0, max(a, b), a + b)
    elif how == "beside":
        a, b = j(), j()
        parts = [(s1, t1, (x0, y0 + (b - a) / 2, a, a)), (s2, t2, (x0 + a, y0, b, b))]
        box = (x0, y0 + min(0, (b - a) / 2), a + b, max(a, b))
    else:  # inside: the second part, smaller, centred in the first
        a = j() * 1.4
        c = a * 0.5
        parts = [(s1, t1, (x0, y0, a, a)), (s2, t2, (x0 + (a - c) / 2, y0 + (a - c) / 2, c, c))]
        box = (x0, y0, a, a)
    return parts, box


def _visible(box, w: int, h: int) -> tuple[tuple[int, int, int, int], float]:
    """VOC bndbox (1-based, inclusive, clipped) and the fraction of the box inside the image."""
    x0, y0, bw, bh = box
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + bw, w), min(y0 + bh, h)
    frac = max(cx1 - cx0, 0) * max(cy1 - cy0, 0) / (bw * bh)
    bnd = (int(cx0) + 1, int(cy0) + 1, max(int(cx1), int(cx0) + 1), max(int(cy1), int(cy0) + 1))
    return bnd, frac


def render_target(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    """One target image (w, h = ``size``) and its objects as VOC annotations: name, bndbox
    (xmin, ymin, xmax, ymax; 1-based), truncated, difficult."""
    w, h = size
    names = list(TARGET_CLASSES)
    present = [
        names[i] for i in rng.integers(len(names), size=int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])))
    ]
    tint = CONTEXT[present[0]] if rng.uniform() < CONTEXT_P else None
    canvas = clutter(rng, w, h, tint)
    unit = min(w, h)
    # Distractors first (behind): single primitives of the same vocabulary as the objects.
    for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))):
        s = _log_uniform(rng, *TARGET_PART) * unit
        shape, texture = SHAPES[rng.integers(len(SHAPES))], TEXTURES[rng.integers(len(TEXTURES))]
        box = (rng.uniform(-s / 2, w - s / 2), rng.uniform(-s / 2, h - s / 2), s, s)
        draw_part(canvas, rng, shape, texture, box)
    objects = []
    for name in present:
        # Parts spread over a factor of 10 (log-uniform), as objects in photographs do: no
        # single Q suits them all, which is why appendix B averages descriptors over several.
        s = _log_uniform(rng, *TARGET_PART) * unit
        # up to 60% of a part outside the image; a composition larger than the image straddles it
        x0, y0 = (rng.uniform(*sorted((-0.6 * s, side - 1.4 * s))) for side in (w, h))
        parts, box = _composition_parts(name, x0, y0, s, rng)
        for shape, texture, pbox in parts:
            draw_part(canvas, rng, shape, texture, pbox)
        bnd, frac = _visible(box, w, h)
        side = max(bnd[2] - bnd[0], bnd[3] - bnd[1]) + 1
        objects.append(
            dict(
                name=name,
                bndbox=bnd,
                truncated=int(frac < 0.95),
                difficult=int(side < DIFFICULT_SIDE or frac < DIFFICULT_VISIBLE),
                part=s / unit,  # not written to the XML: the drawn part side / smaller image side
            )
        )
    return finish(canvas), objects


# --- writing the layouts -------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    """What :func:`generate` writes; the marker file records it, so a rerun with the same
    config reuses the data and a different one regenerates it."""

    seed: int = 0
    source_train: int = option(100, help="images per source class")
    source_val: int = 20
    source_distractors: int = option(0, help="objects of other classes behind each source object (harder)")
    target_train: int = option(250, help="VOC images per split")
    target_val: int = 250
    target_test: int = 500


def _rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index])


def _save(img: Image.Image, path: Path) -> None:
    # Baseline JPEG with fixed settings: Pillow writes identical bytes for identical pixels.
    img.save(path, format="JPEG", quality=90, optimize=False, progressive=False)


def write_source(
    root, *, seed: int = 0, train: int = 100, val: int = 20, distractors: int = 0, progress: bool = False
) -> Path:
    """Write the source set under ``root`` in ImageFolder layout (``train/<class>/<n>.jpg``,
    ``val/<class>/<n>.jpg``), ``train``/``val`` images per class, each with ``distractors``
    objects of other classes behind the labelled one (:func:`render_source`). Returns ``root``."""
    root = Path(root)
    jobs = [
        (split, c, i)
        for split, n in (("train", train), ("val", val))
        for c in range(len(SOURCE_CLASSES))
        for i in range(n)
    ]
    for split, c in {(s, c) for s, c, _ in jobs}:
        (root / split / SOURCE_CLASSES[c]).mkdir(parents=True, exist_ok=True)
    for split, c, i in tqdm(jobs, desc="source images", disable=not progress, unit="img"):
        n = i + (0 if split == "train" else train)  # one index space: val never repeats a train image
        rng = _rng(seed, 1, c * 1_000_000 + n)
        size = SOURCE_SIZES[rng.integers(len(SOURCE_SIZES))]
        _save(render_source(rng, c, size, distractors)[0], root / split / SOURCE_CLASSES[c] / f"{n:06d}.jpg")
    return root


def _annotation_xml(image_id: str, size: tuple[int, int], objects: list[dict]) -> str:
    w, h = size
    lines = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>vggfeat toy VOC</database>",
        "\t</source>",
        f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        x0, y0, x1, y1 = o["bndbox"]
        lines += [
            "\t<object>",
            f"\t\t<name>{o['name']}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{o['truncated']}</truncated>",
            f"\t\t<difficult>{o['difficult']}</difficult>",
            f"\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>"
            f"\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>",
            "\t</object>",
        ]
    return "\n".join(lines + ["</annotation>", ""])


def image_label(objects: list[dict], name: str) -> int:
    """The devkit's image-level label: 1 if a non-difficult object of class ``name`` is present,
    0 if only difficult ones are, -1 if none."""
    flags = [o["difficult"] for o in objects if o["name"] == name]
    return -1 if not flags else (1 if min(flags) == 0 else 0)


def write_voc(
    root, *, seed: int = 0, train: int = 250, val: int = 250, test: int = 500, progress: bool = False
) -> Path:
    """Write the target set as ``root/VOCdevkit/VOC2007`` (JPEGImages, Annotations,
    ImageSets/Main with ``{train,val,trainval,test}.txt`` and ``<class>_<split>.txt``, labels
    right-aligned as the devkit writes them). Image ids are shuffled across splits, as in VOC2007.
    Returns ``root/VOCdevkit``."""
    voc = Path(root) / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    n = train + val + test
    order = np.random.default_rng([seed, 2]).permutation(n)
    split_of = np.array(["train"] * train + ["val"] * val + ["test"] * test)[order]
    ids = {s: [] for s in SPLITS}
    labels = {}
    for k in tqdm(range(n), desc="target images", disable=not progress, unit="img"):
        image_id = f"{k + 1:06d}"
        rng = _rng(seed, 3, k)
        size = TARGET_SIZES[rng.choice(len(TARGET_SIZES), p=[0.4, 0.15, 0.1, 0.2, 0.15])]
        img, objects = render_target(rng, size)
        _save(img, voc / "JPEGImages" / f"{image_id}.jpg")
        (voc / "Annotations" / f"{image_id}.xml").write_text(_annotation_xml(image_id, size, objects))
        ids[str(split_of[k])].append(image_id)
        labels[image_id] = {c: image_label(objects, c) for c in TARGET_CLASSES}
    ids["trainval"] = sorted(ids["train"] + ids["val"])
    main = voc / "ImageSets" / "Main"
    for split, members in ids.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
        for c in TARGET_CLASSES:
            (main / f"{c}_{split}.txt").write_text("".join(f"{i} {labels[i][c]:2d}\n" for i in members))
    return voc.parent


MARKER = "toy.json"


def generate(root, config: ToyConfig = ToyConfig(), *, progress: bool = False) -> tuple[Path, Path]:
    """Write both sets under ``root`` (``root/source``, ``root/VOCdevkit``) unless ``root``
    already holds them for the same ``config`` (checked by the marker file ``root/toy.json``,
    written last). Returns (source root, VOCdevkit root)."""
    root = Path(root)
    want = {"version": VERSION, **asdict(config)}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == want:
        log.info("reusing toy data in %s", root)
        return root / "source", root / "VOCdevkit"
    ours = {"source", "VOCdevkit", MARKER}
    if root.exists() and any(p.name not in ours for p in root.iterdir()):
        raise FileExistsError(
            f"{root} exists and holds files the toy generator did not write; "
            "choose an empty or new folder for the generated data"
        )
    # Write beside the destination and rename at the end: an interrupted run leaves no
    # half-written folder that a later run would mistake for complete data.
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    c = config
    src = dict(train=c.source_train, val=c.source_val, distractors=c.source_distractors)
    write_source(tmp / "source", seed=c.seed, progress=progress, **src)
    write_voc(tmp, seed=c.seed, train=c.target_train, val=c.target_val, test=c.target_test, progress=progress)
    (tmp / MARKER).write_text(json.dumps(want, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    log.info("wrote toy data to %s", root)
    return root / "source", root / "VOCdevkit"
