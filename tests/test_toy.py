"""The procedural data: deterministic bytes, valid ImageFolder and VOC devkit layouts."""

import hashlib
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

from vggfeat.experiments import toy, toy_draw

SMALL = toy.ToyConfig(seed=3, source_train=2, source_val=1, target_train=6, target_val=5, target_test=7)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "data"
    source, devkit = toy.generate(root, SMALL)
    return root, source, devkit


def test_same_seed_same_bytes(data, tmp_path):
    root, *_ = data
    toy.generate(tmp_path / "again", SMALL)
    first, second = digest(root), digest(tmp_path / "again")
    assert len(first) > 50 and first == second
    toy.generate(tmp_path / "other", toy.ToyConfig(**{**SMALL.__dict__, "seed": 4}))
    other = digest(tmp_path / "other")
    assert other.keys() == first.keys()
    jpgs = [k for k in first if k.endswith(".jpg")]
    assert all(other[k] != first[k] for k in jpgs)


def test_rerun_reuses_and_config_change_regenerates(tmp_path):
    cfg = toy.ToyConfig(source_train=1, source_val=1, target_train=2, target_val=2, target_test=2)
    root = tmp_path / "d"
    toy.generate(root, cfg)
    img = root / "VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    stamp = img.stat().st_mtime_ns
    toy.generate(root, cfg)
    assert img.stat().st_mtime_ns == stamp
    toy.generate(root, toy.ToyConfig(**{**cfg.__dict__, "target_test": 3}))
    assert len(list((root / "VOCdevkit/VOC2007/JPEGImages").iterdir())) == 7
    assert not (tmp_path / "d.partial").exists()


def test_refuses_folder_with_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        toy.generate(tmp_path, SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_source_is_an_imagefolder(data):
    _, source, _ = data
    for split, n in (("train", SMALL.source_train), ("val", SMALL.source_val)):
        ds = torchvision.datasets.ImageFolder(source / split)
        assert ds.classes == sorted(toy.SOURCE_CLASSES)
        assert len(ds) == n * len(toy.SOURCE_CLASSES)
        img, label = ds[len(ds) - 1]
        assert img.mode == "RGB" and min(img.size) >= 64 and label == len(ds.classes) - 1
    train = {p.name for p in (source / "train").rglob("*.jpg")}
    val = {p.name for p in (source / "val").rglob("*.jpg")}
    assert not train & val  # val images are other draws, not copies of train images


def parse_annotation(path: Path) -> tuple[tuple[int, int], list[dict]]:
    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    objects = [
        dict(
            name=o.findtext("name"),
            difficult=int(o.findtext("difficult")),
            box=tuple(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.iter("object")
    ]
    return size, objects


def test_voc_layout_as_the_devkit_writes_it(data):
    _, _, devkit = data
    voc = devkit / "VOC2007"
    main = voc / "ImageSets" / "Main"
    splits = {s: (main / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 5, 7]
    assert splits["trainval"] == sorted(splits["train"] + splits["val"])
    every = sorted(splits["trainval"] + splits["test"])
    assert every == [f"{k:06d}" for k in range(1, 19)]
    assert not set(toy.TARGET_CLASSES) & set(toy.SOURCE_CLASSES)
    line = re.compile(r"^\d{6} (-1| 0| 1)$")
    for image_id in every:
        size, objects = parse_annotation(voc / "Annotations" / f"{image_id}.xml")
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as img:
            assert img.size == size and img.mode == "RGB"
        assert size in toy.TARGET_SIZES and 1 <= len(objects) <= 3
        for o in objects:
            x0, y0, x1, y1 = o["box"]
            assert 1 <= x0 <= x1 <= size[0] and 1 <= y0 <= y1 <= size[1]
            if max(x1 - x0, y1 - y0) + 1 < toy.DIFFICULT_SIDE:
                assert o["difficult"] == 1
    for split, members in splits.items():
        for c in toy.TARGET_CLASSES:
            lines = (main / f"{c}_{split}.txt").read_text().splitlines()
            assert all(line.match(s) for s in lines)
            assert [s.split()[0] for s in lines] == members
            for s in lines:  # the devkit's rule, recomputed from the XML
                image_id, label = s.split()
                flags = [
                    o["difficult"]
                    for o in parse_annotation(voc / "Annotations" / f"{image_id}.xml")[1]
                    if o["name"] == c
                ]
                assert int(label) == (-1 if not flags else 1 if 0 in flags else 0)


def test_primitives_have_their_geometry():
    # Areas as fractions of the box, by hand: circle pi/4, diamond 1/2, square 0.84^2,
    # cross with arms 0.34 wide: 2 * 0.34 - 0.34^2; textures: stripes and checker half, dots pi * 0.3^2.
    n = 400
    area = {s: toy_draw.shape_mask(s, n, n).mean() for s in toy.SHAPES}
    for shape, want in (
        ("circle", math.pi / 4),
        ("diamond", 0.5),
        ("square", 0.84**2),
        ("cross", 2 * 0.34 - 0.34**2),
    ):
        assert area[shape] == pytest.approx(want, abs=0.01)
    assert toy_draw.texture_mask("solid", n, n, 10).mean() == 0
    for texture, want in (("stripes", 0.5), ("checker", 0.5), ("dots", math.pi * 0.09)):
        assert toy_draw.texture_mask(texture, n, n, 10).mean() == pytest.approx(want, abs=0.01)


def test_part_is_clipped_at_the_border():
    canvas = np.zeros((50, 50, 3), np.uint8)
    toy.draw_part(canvas, np.random.default_rng(0), "square", "solid", (-40, -40, 60, 60))
    painted = canvas.any(axis=2)
    # The square covers box pixels 0.08..0.92 of 59: columns/rows up to 60*0.92-40 ~ 14.
    assert painted[:10, :10].all() and not painted[20:, :].any() and not painted[:, 20:].any()


def test_labels_from_objects():
    objs = [dict(name="house", difficult=1), dict(name="house", difficult=0), dict(name="kite", difficult=1)]
    assert toy.image_label(objs, "house") == 1
    assert toy.image_label(objs, "kite") == 0
    assert toy.image_label(objs, "eyes") == -1


def test_vggfeat_voc_loader_reads_the_target(data):
    from vggfeat.data import voc, voc_devkit

    _, _, devkit = data
    classes = tuple(toy.TARGET_CLASSES)
    loaded = voc.load_voc(devkit, 2007, classes=classes)
    assert [len(loaded.splits[s]) for s in ("train", "val", "test")] == [6, 5, 7]
    assert loaded.labelled >= {"train", "val", "trainval", "test"}
    for i, image_id in enumerate(loaded.ids):
        objects = voc_devkit.read_annotation(loaded.root / "Annotations" / f"{image_id}.xml")
        # the class files (what load_voc read) agree with the loader's own rule applied to the XML
        assert loaded.labels[i].tolist() == voc_devkit.labels_from_objects(objects, classes).tolist()
    assert (loaded.labels == 1).any(axis=0).sum() >= 5  # most classes occur even in 18 images


def test_objects_spread_over_scales_within_every_class():
    """Sec. 3.1/appendix B need scale to matter: within each source class object sides span the
    designed factor of 2, and target parts of each class a factor of 10 (log-uniform)."""
    lo, hi = toy.SOURCE_OBJECT
    for label in range(len(toy.SOURCE_CLASSES)):
        fracs = []
        for i in range(40):
            rng = toy._rng(0, 1, label * 1_000_000 + i)
            size = toy.SOURCE_SIZES[rng.integers(len(toy.SOURCE_SIZES))]
            _, (_, _, w, h) = toy.render_source(rng, label, size)
            fracs.append(math.sqrt(w * h) / min(size))
        assert lo * 0.85 <= min(fracs) and max(fracs) <= hi * 1.15
        assert max(fracs) / min(fracs) > 1.7  # 40 log-uniform draws over a factor of 2
    # target parts: log-uniform over a factor of 10 of the smaller side, whatever the class
    parts = {c: [] for c in toy.TARGET_CLASSES}
    for k in range(300):
        rng = toy._rng(0, 3, k)
        _, objects = toy.render_target(rng, toy.TARGET_SIZES[k % len(toy.TARGET_SIZES)])
        for o in objects:
            parts[o["name"]].append(o["part"])
    lo, hi = toy.TARGET_PART
    assert hi / lo == pytest.approx(10)
    for name, found in parts.items():
        assert len(found) >= 10, name
        assert lo <= min(found) and max(found) <= hi
        assert np.percentile(found, 90) / np.percentile(found, 10) > 4, name  # 80% of x10, log-uniform


def test_target_parts_match_the_source_objects_at_the_middle_scales():
    """The rule of the module docstring, by hand: source objects have a log-mean side of
    sqrt(0.4 * 0.8) of the image rescaled to the middle training scale S = 110 (62.2 px); target
    parts have the same log-mean side in the image rescaled to the middle test scale Q = 146 of
    appendix B's VOC grid (73, 110, 146, 183, 219 at crop 64)."""
    assert toy.TEST_Q == (73, 110, 146, 183, 219) and toy.TRAIN_S_MID == 110
    source_px = math.sqrt(0.4 * 0.8) * 110
    lo, hi = toy.TARGET_PART
    assert math.sqrt(lo * hi) * 146 == pytest.approx(source_px) and source_px == pytest.approx(
        62.23, abs=0.01
    )


def test_context_colour_tells_a_little_about_the_classes():
    """40% of the target backgrounds take a present class's context colour (module docstring):
    an image's mean colour is then nearer its first object's context colour than another's,
    but far from always (the signal is weak by design)."""
    names = list(toy.TARGET_CLASSES)
    own, other = [], []
    for k in range(200):
        img, objects = toy.render_target(toy._rng(0, 3, k), toy.TARGET_SIZES[0])
        mean = np.asarray(img, np.float64).reshape(-1, 3).mean(0)
        first = objects[0]["name"]
        dist = {c: np.linalg.norm(mean - np.array(toy.CONTEXT[c])) for c in names}
        own.append(dist[first])
        other.append(np.mean([d for c, d in dist.items() if c != first]))
    nearer = np.mean(np.array(own) < np.array(other))
    assert 0.6 < nearer < 0.95
    assert len(set(toy.CONTEXT.values())) == len(names)  # one distinct colour per class


def test_distractors_are_other_classes_behind_the_labelled_object(monkeypatch):
    """``source_distractors``: each image gets that many objects of *other* source classes,
    smaller than the labelled one by :data:`toy.DISTRACTOR_SIDE`, drawn before it (so behind
    it); without the option nothing extra is drawn and the bytes are those of before."""
    calls = []
    real = toy.draw_part
    monkeypatch.setattr(toy, "draw_part", lambda canvas, rng, *a: calls.append(a) or real(canvas, rng, *a))
    lo, hi = toy.DISTRACTOR_SIDE
    for label in range(len(toy.SOURCE_CLASSES)):
        for k in (0, 1, 3):
            calls.clear()
            texture, shape = toy.SOURCE_CLASSES[label].split("-")
            _, box = toy.render_source(toy._rng(5, 1, label), label, (144, 128), distractors=k)
            assert len(calls) == k + 1
            assert calls[-1][:2] == (shape, texture) and calls[-1][2] == box  # the labelled one, last
            ow, oh = box[2:]  # the drawn side times 0.85 ... 1.15 in each direction
            for s, t, (x0, y0, w, h) in calls[:-1]:
                assert (s, t) != (shape, texture) and f"{t}-{s}" in toy.SOURCE_CLASSES
                assert w == h and lo * max(ow, oh) / 1.15 <= w <= hi * min(ow, oh) / 0.85
                assert -w / 2 <= x0 <= 144 - w / 2 and -h / 2 <= y0 <= 128 - h / 2  # centre inside
    plain = np.asarray(toy.render_source(toy._rng(5, 1, 7), 7, (144, 128))[0])
    zero = np.asarray(toy.render_source(toy._rng(5, 1, 7), 7, (144, 128), distractors=0)[0])
    two = np.asarray(toy.render_source(toy._rng(5, 1, 7), 7, (144, 128), distractors=2)[0])
    assert np.array_equal(plain, zero) and not np.array_equal(plain, two)


def test_distractors_change_the_source_only_and_are_in_the_marker(tmp_path):
    base = dict(source_train=1, source_val=1, target_train=2, target_val=2, target_test=2)
    toy.generate(tmp_path / "plain", toy.ToyConfig(**base))
    toy.generate(tmp_path / "hard", toy.ToyConfig(**base, source_distractors=2))
    plain, hard = digest(tmp_path / "plain"), digest(tmp_path / "hard")
    assert plain.keys() == hard.keys()
    changed = {k for k in plain if plain[k] != hard[k]}
    assert changed - {"toy.json"} and all(k.startswith("source/") for k in changed - {"toy.json"})
    assert all(k in changed for k in plain if k.startswith("source/"))
    assert '"source_distractors": 2' in (tmp_path / "hard" / "toy.json").read_text()
