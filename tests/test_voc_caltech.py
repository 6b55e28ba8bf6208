"""VOC and Caltech loaders on tiny trees written here in the official on-disk formats, and the
benchmark scripts end to end with a tiny random network."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import naive_voc07_ap, script, torchrun
from PIL import Image

import vggfeat
from vggfeat import errors
from vggfeat.data import caltech, voc, voc_devkit
from vggfeat.data.decode import load_image

REPO = Path(__file__).resolve().parents[1]
CLASSES = voc_devkit.VOC_CLASSES


def _jpeg(path: Path, seed: int, size=(300, 240), gray=False):
    """A smooth random JPEG of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 20 + 1, size[0] // 20 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert("L") if gray else img).save(path, quality=90)


def _xml(objects, size=(300, 240)) -> str:
    """A VOC annotation: objects are (name, difficult, (xmin, ymin, xmax, ymax), actions|None)."""
    out = [f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, diff, box, actions in objects:
        acts = (
            ""
            if actions is None
            else "<actions>" + "".join(f"<{a}>{v}</{a}>" for a, v in actions.items()) + "</actions>"
        )
        bb = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        out.append(
            f"<object><name>{name}</name><pose>Left</pose><difficult>{int(diff)}</difficult>{acts}<bndbox>{bb}</bndbox></object>"
        )
    return "".join(out) + "</annotation>\n"


def expected_label(objects, cls) -> int:
    """The devkit rule, written independently: 1 if any non-difficult, 0 if only difficult, -1."""
    flags = [d for n, d, _, _ in objects if n == cls]
    return -1 if not flags else (0 if all(flags) else 1)


def make_voc(root: Path, year=2007, *, per_split=10, class_files=True, test_labels=True):
    """VOCdevkit/VOC<year> with train/val/test, each image holding two classes (and the last one
    of a split every class not seen yet in it, so every class has a positive in every split),
    some objects difficult, one grayscale JPEG. Returns
    {split: [(id, objects)]}."""
    d = root / "VOCdevkit" / f"VOC{year}"
    main = d / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (d / "Annotations").mkdir()
    splits = {}
    n = 0
    for split in ("train", "val", "test"):
        rows = []
        for j in range(per_split):
            n += 1
            iid = f"{year}_{n:06d}"
            a, b = CLASSES[(2 * j) % 20], CLASSES[(2 * j + 1) % 20]
            objects = [(a, False, (10, 20, 150, 200), None), (b, j % 3 == 0, (100, 30, 290, 230), None)]
            if j % 4 == 1:
                objects.append((a, True, (5, 5, 50, 50), None))  # a difficult duplicate: still 1
            if j == per_split - 1:  # the split's last image holds the classes not seen yet
                seen = {o[0] for _, objs in rows for o in objs} | {a, b}
                objects += [(c, False, (20, 20, 80, 80), None) for c in CLASSES if c not in seen]
            _jpeg(d / "JPEGImages" / f"{iid}.jpg", n, gray=(n == 3))
            (d / "Annotations" / f"{iid}.xml").write_text(_xml(objects))
            rows.append((iid, objects))
        splits[split] = rows
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i, _ in rows))
        if class_files and (split != "test" or test_labels):
            for c in CLASSES:  # the devkit's "%s %2d" format: right-aligned labels
                (main / f"{c}_{split}.txt").write_text(
                    "".join(f"{i} {expected_label(o, c):2d}\n" for i, o in rows)
                )
    return splits


def test_class_file_format_is_right_aligned(tmp_path):
    make_voc(tmp_path)
    lines = (tmp_path / "VOCdevkit/VOC2007/ImageSets/Main/bird_train.txt").read_text().splitlines()
    assert any(line.endswith("  1") for line in lines) and any(line.endswith(" -1") for line in lines)


@pytest.mark.parametrize("class_files", [True, False])
def test_load_voc_labels(tmp_path, class_files):
    splits = make_voc(tmp_path, class_files=class_files)
    data = voc.load_voc(tmp_path / "VOCdevkit", 2007)
    assert set(data.splits) == {"train", "val", "test", "trainval"} and data.labelled == set(data.splits)
    for split, rows in splits.items():
        idx = data.splits[split]
        assert [data.ids[i] for i in idx] == [i for i, _ in rows]  # file order kept
        want = np.array([[expected_label(o, c) for c in CLASSES] for _, o in rows])
        np.testing.assert_array_equal(data.labels[idx], want)
    assert (data.labels == 0).any() and (data.labels == 1).any()
    assert all(p.is_file() and p.name == f"{i}.jpg" for i, p in zip(data.ids, data.images))
    np.testing.assert_array_equal(data.splits["trainval"], np.r_[data.splits["train"], data.splits["val"]])


def test_voc_root_variants_and_max_images(tmp_path):
    make_voc(tmp_path, per_split=4)
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2007"):
        assert len(voc.load_voc(root, 2007).ids) == 12
    small = voc.load_voc(tmp_path, 2007, max_images=2)
    assert {k: len(v) for k, v in small.splits.items()} == {"train": 2, "val": 2, "test": 2, "trainval": 4}


def test_missing_voc_shows_layout_and_source(tmp_path):
    with pytest.raises(errors.VOCError) as e:
        voc.load_voc(tmp_path, 2012)
    msg = str(e.value)
    assert "VOC2012/JPEGImages/<id>.jpg" in msg and "VOCDetection" in msg and "--download" in msg


def test_voc2012_test_is_unlabelled_and_protocol(tmp_path):
    make_voc(tmp_path, 2012, test_labels=False)
    data = voc.load_voc(tmp_path, 2012)
    assert "test" in data.splits and "test" not in data.labelled
    p = voc.protocol(data, seed=0)
    assert p.ap == "voc12" and "val" in p.description
    np.testing.assert_array_equal(p.test, data.splits["val"])
    assert set(p.select[0]) | set(p.select[1]) == set(data.splits["train"]) and len(p.select[1]) == 2
    assert p.submit is not None and len(p.submit[1]) == 10
    make_voc(tmp_path / "b", 2007)
    p7 = voc.protocol(voc.load_voc(tmp_path / "b", 2007))
    assert p7.ap == "voc07" and len(p7.fit) == 20


def test_write_results_devkit_format(tmp_path):
    paths = voc.write_results(tmp_path, ["a", "b"], np.array([[0.5] * 20, [-1.25] * 20]))
    # ImageNet-pretrained features use outside data: competition 2
    assert len(paths) == 20 and paths[0].name == "comp2_cls_test_aeroplane.txt"
    assert paths[0].read_text() == "a 0.500000\nb -1.250000\n"
    assert voc.competition(["default", "D.pth"]) == "comp2" and voc.competition([None]) == "comp1"


def make_actions(root: Path, *, action_files=True):
    """VOC2012 action layout: images with one or two persons, each with an <actions> block."""
    d = root / "VOCdevkit" / "VOC2012"
    (d / "Annotations").mkdir(parents=True)
    folder = d / "ImageSets" / "Action"
    folder.mkdir(parents=True)
    samples = {}
    n = 0
    for split in ("train", "val"):
        rows, ids = [], []
        for j in range(6):
            n += 1
            iid = f"2012_{n:06d}"
            persons = []
            for p in range(1 + j % 2):
                act = voc_devkit.ACTIONS[(j + 5 * p + (split == "val")) % 10]
                persons.append(
                    (
                        "person",
                        False,
                        (20 + 100 * p, 30, 120 + 100 * p, 200),
                        {a: int(a == act) for a in voc_devkit.ACTIONS},
                    )
                )
            objects = [("chair", False, (1, 1, 40, 40), None)] + persons  # objidx counts all objects
            (d / "Annotations" / f"{iid}.xml").write_text(_xml(objects))
            _jpeg(d / "JPEGImages" / f"{iid}.jpg", 100 + n)
            ids.append(iid)
            rows += [(iid, k + 2, persons[k][2], persons[k][3]) for k in range(len(persons))]
        samples[split] = rows
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        if action_files:
            for a in voc_devkit.ACTIONS:
                (folder / f"{a}_{split}.txt").write_text(
                    "".join(f"{i} {k} {1 if acts[a] else -1:2d}\n" for i, k, _, acts in rows)
                )
    return samples


@pytest.mark.parametrize("action_files", [True, False])
def test_load_voc_actions(tmp_path, action_files):
    samples = make_actions(tmp_path, action_files=action_files)
    data = voc.load_voc_actions(tmp_path)
    for split, rows in samples.items():
        idx = data.splits[split]
        assert [(data.ids[i], data.objidx[i]) for i in idx] == [(i, k) for i, k, _, _ in rows]
        np.testing.assert_array_equal(data.boxes[idx], [box for _, _, box, _ in rows])
        want = [[1 if acts[a] else -1 for a in voc_devkit.ACTIONS] for _, _, _, acts in rows]
        np.testing.assert_array_equal(data.labels[idx], want)
    crops = voc.person_crops(data)
    x0, y0, x1, y1 = data.boxes[0]
    assert crops[0].size == (x1 - x0 + 1, y1 - y0 + 1) and crops[0].mode == "RGB"
    full = np.asarray(load_image(data.images[0]))
    np.testing.assert_array_equal(np.asarray(crops[0]), full[y0 - 1 : y1, x0 - 1 : x1])


# --- Caltech -----------------------------------------------------------------------------------


def make_caltech(root: Path, dataset="caltech101", n=(7, 8, 9, 7), torchvision_layout=False):
    folder, bg = caltech.DATASETS[dataset][:2]
    names = (
        ["BACKGROUND_Google", "Faces", "ant", "barrel"]
        if dataset == "caltech101"
        else ["001.ak47", "002.american-flag", "003.backpack", "257.clutter"]
    )
    base = root / dataset / folder if torchvision_layout else root / folder
    for k, (name, count) in enumerate(zip(names, n)):
        for j in range(count):
            _jpeg(base / name / f"image_{j + 1:04d}.jpg", 1000 * k + j, size=(120, 90), gray=(j == 1))
    (base / names[1] / "notes.txt").write_text("not an image")
    _jpeg(base / names[1] / "nested" / "dup.jpg", 7, size=(40, 30))  # Caltech-256 has such a folder
    return base, names


@pytest.mark.parametrize("dataset", ["caltech101", "caltech256"])
def test_load_caltech(tmp_path, dataset):
    base, names = make_caltech(tmp_path, dataset, torchvision_layout=dataset == "caltech256")
    data = caltech.load_caltech(tmp_path, dataset)
    assert data.classes == sorted(names) and len(data.images) == 31
    np.testing.assert_array_equal(
        np.bincount(data.labels), [dict(zip(names, (7, 8, 9, 7)))[c] for c in data.classes]
    )
    assert all(p.parent.name == data.classes[y] for p, y in zip(data.images, data.labels))
    gray = [p for p in data.images if p.name == "image_0002.jpg"][0]
    assert Image.open(gray).mode == "L" and load_image(gray).mode == "RGB"
    no_bg = caltech.load_caltech(base, dataset, include_background=False)
    assert len(no_bg.classes) == 3 and caltech.DATASETS[dataset][1] not in no_bg.classes
    assert len(caltech.load_caltech(tmp_path, dataset, limit_per_class=2).images) == 8


def test_missing_caltech_shows_layout(tmp_path):
    with pytest.raises(errors.CaltechError, match="Caltech256\\(ROOT, download=True\\)"):
        caltech.load_caltech(tmp_path, "caltech256")


def test_caltech_splits():
    labels = np.repeat(np.arange(3), [7, 8, 12])
    splits = caltech.caltech_splits(labels, n_train=5, n_test=4, n_splits=3, seed=0)
    assert len(splits) == 3
    for train, test in splits:
        assert not set(train) & set(test)
        np.testing.assert_array_equal(np.bincount(labels[train]), [5, 5, 5])
        np.testing.assert_array_equal(np.bincount(labels[test]), [2, 3, 4])  # up to 4 per class
    assert not np.array_equal(splits[0][0], splits[1][0])
    again = caltech.caltech_splits(labels, n_train=5, n_test=4, n_splits=3, seed=0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    rest = caltech.caltech_splits(labels, n_train=5, n_splits=1)[0][1]
    np.testing.assert_array_equal(np.bincount(labels[rest]), [2, 3, 7])  # Caltech-256: the rest
    with pytest.raises(errors.CaltechError, match="--train-per-class"):
        caltech.caltech_splits(labels, n_train=7)


# --- scripts end to end ------------------------------------------------------------------------

TINY = "--model D --weights none --width 0.0625 --fc-dim 32 --scales 224 256 --c-grid 0.1 1".split()


def run_script(name, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _pngs_ok(folder, names):
    for n in names:
        with Image.open(folder / n) as im:
            assert im.format == "PNG" and im.width > 100


def assert_chance_levels(chance: dict, labels: np.ndarray, classes, md: str):
    """The report's chance levels against hand counts of ``labels`` (N, K) and a naive AP of
    random scores: positives per class, their rate among non-difficult images, the chance mAP."""
    for k, c in enumerate(classes):
        pos, counted = int((labels[:, k] == 1).sum()), int((labels[:, k] != 0).sum())
        assert chance["positives"][c] == pos
        assert chance["positive_rate"][c] == (pytest.approx(pos / counted) if counted else None)
    rng = np.random.default_rng(0)
    has = [k for k in range(len(classes)) if (labels[:, k] == 1).any()]
    assert chance["ap_rule"] == "voc07"  # the rule of the naive AP below
    # each class ranked in its own random order, 400 times
    naive = [
        np.mean([naive_voc07_ap(rng.random(len(labels)), labels[:, k]) for k in has]) for _ in range(400)
    ]
    se = np.sqrt(chance["map_std"] ** 2 / chance["permutations"] + np.var(naive) / 400)
    assert abs(chance["map"] - np.mean(naive)) < 4 * se
    assert chance["map_std"] == pytest.approx(np.std(naive), rel=0.3)
    assert f"| chance (random rankings) | {100 * chance['map']:.1f} ± {100 * chance['map_std']:.1f} |" in md
    assert "| class | positives | positive rate (%) | chance AP (%) |" in md


@pytest.mark.slow
@pytest.mark.parametrize("year", [2007, 2012])
def test_voc_script_end_to_end(tmp_path, year, tiny):
    splits = make_voc(tmp_path, year, per_split=8, test_labels=year == 2007)
    out = tmp_path / "run"
    args = ["--root", tmp_path / "VOCdevkit", "--year", year, *TINY]
    if year == 2012:  # weights from a file (trained elsewhere: outside data) instead of random ones
        w = vggfeat.save_weights(tiny("D", num_classes=1000), tmp_path / "d.safetensors")
        args[args.index("none")] = w
    r = run_script("voc_svm.py", *args, "--out", out, cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    (label,) = res["results"]
    assert len(res["results"][label]["ap"]) == 20 and 0 <= res["results"][label]["map"] <= 1
    assert res["comparable"] is False and res["paper"]["VGG Net-D"] == (89.3 if year == 2007 else 89.0)
    why = res["not_comparable"]
    assert ("random weights (--weights none)" in why) == (year == 2007)
    assert any("VGG-D is not the paper's network" in w for w in why)
    md = (out / "report.md").read_text()
    assert (
        "**Not comparable with the paper: " in md
        and "VGG Net-D (paper, same setting)" in md
        and md in r.stdout
    )
    _pngs_ok(out, ["pr_curves.png", "ap_per_class.png"])
    if year == 2012:
        f = out / "results" / "VOC2012" / "Main" / "comp2_cls_test_dog.txt"
        assert len(f.read_text().splitlines()) == 8
        return
    test = np.array([[expected_label(o, c) for c in CLASSES] for _, o in splits["test"]])
    assert_chance_levels(res["chance"], test, CLASSES, md)
    # quick run: marked in the table and the JSON
    run_script("voc_svm.py", *args, "--max-images", 6, "--out", out / "q", cwd=tmp_path)
    assert "--max-images 6" in (out / "q" / "report.md").read_text()
    res = json.loads((out / "q" / "results.json").read_text())
    assert res["quick_run"] == 6 and any("--max-images 6" in w for w in res["not_comparable"])


@pytest.mark.slow
def test_voc_script_feature_cache(tmp_path):
    make_voc(tmp_path, per_split=3)
    args = ["--root", tmp_path, *TINY, "--out", tmp_path / "run"]
    run_script("voc_svm.py", *args, cwd=tmp_path)
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    stored = lambda: sorted((p.name, p.stat().st_size) for p in (tmp_path / "run" / "features").rglob("*"))
    before = stored()
    assert before
    run_script("voc_svm.py", *args, cwd=tmp_path)  # the second run reads the stored features ...
    assert stored() == before  # ... and adds nothing to the store
    assert json.loads((tmp_path / "run" / "results.json").read_text())["results"] == first["results"]


@pytest.mark.slow
def test_voc_script_under_two_ranks_writes_once(tmp_path):
    make_voc(tmp_path, per_split=3)
    out = tmp_path / "run"
    r = torchrun(2, REPO / "benchmarks" / "voc_svm.py", "--root", tmp_path, *TINY, "--no-cache", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("RANDOM WEIGHTS") == 2  # both ranks ran (and extracted their shard) ...
    assert (
        r.stderr.count(f"wrote {out / 'report.md'}") == 1 and r.stdout.count(f"wrote {out}") == 1
    )  # ... once
    assert len(json.loads((out / "results.json").read_text())["results"]["VGG Net-D"]["ap"]) == 20


@pytest.mark.slow
def test_caltech_script_end_to_end(tmp_path):
    make_caltech(tmp_path, "caltech101", n=(8, 8, 8, 8))
    out = tmp_path / "run"
    args = [
        "--root",
        tmp_path,
        "--dataset",
        "caltech101",
        *TINY,
        "--aggregate",
        "stack",
        "--splits",
        2,
    ]
    run_script("caltech_svm.py", *args, "--train-per-class", 5, "--out", out, cwd=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert len(res["recalls"]) == 2 and res["paper"]["VGG Net-D"] == [91.8, 1.0]
    assert len(res["class_recall"]) == 4 and "BACKGROUND_Google" in res["class_recall"]
    md = (out / "report.md").read_text()
    assert "±" in md and res["chance"] == 1 / 4 and "| chance (1 / 4 classes) | 25.00 |" in md
    _pngs_ok(out, ["recall_per_class.png"])


@pytest.mark.slow
def test_action_script_end_to_end(tmp_path):
    make_actions(tmp_path)
    out = tmp_path / "run"
    run_script(
        "voc_action_svm.py", "--root", tmp_path / "VOCdevkit", *TINY, "--no-cache", "--out", out, cwd=tmp_path
    )
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {"whole image", "whole image + person box"}
    assert len(res["results"]["whole image"]["ap"]) == 10
    assert res["paper"] == {"whole image": 79.2, "whole image + person box": 84.0}
    val = voc.load_voc_actions(tmp_path / "VOCdevkit")
    val = val.labels[val.splits["val"]]
    assert res["chance"]["ap_rule"] == "voc12"  # the action AP rule, VOC2010+
    assert res["chance"]["positives"] == {
        a: int((val[:, k] == 1).sum()) for k, a in enumerate(voc_devkit.ACTIONS)
    }
    _pngs_ok(out, ["pr_curves.png", "ap_per_class.png"])
    assert not (out / "features_whole").exists() and not (out / "features_box").exists()  # --no-cache


# --- comparable with the paper only for its protocol -------------------------------------------


def meta_nets(*configs, **arch):
    """Networks with the architecture only (no memory): what the comparability check reads, with
    the provenance the loader records for the authors' Caffe release of D and E."""
    with torch.device("meta"):
        nets = [vggfeat.vgg(c, **arch) for c in configs]
    for n in nets:
        n.meta["provenance"] = f"caffe VGG_ILSVRC_{ {'D': 16, 'E': 19}.get(n.config) }_layers.caffemodel"
    return nets


def _one_reason(not_comparable, cfg, nets, why):
    (reason,) = not_comparable(cfg, nets)
    assert why in reason


def test_voc_comparable_only_for_the_paper_protocol(tmp_path):
    mod = script("voc_svm")
    paper, D = mod.Config(root=tmp_path, weights=["default"]), meta_nets("D")
    assert mod.not_comparable(paper, D) == []
    assert mod.not_comparable(replace(paper, year=2012), D) == []
    assert (
        mod.not_comparable(replace(paper, models=["D", "E"], weights=["default"] * 2), meta_nets("D", "E"))
        == []
    )
    why = mod.not_comparable(replace(paper, models=["A"]), meta_nets("A"))
    assert any("VGG Net-A: the paper reports no such nets" in w for w in why)
    assert any("VGG-A's weights are" in w and "none were published" in w for w in why)
    for change, nets, why in [
        (dict(weights=[None]), D, "random weights"),
        (dict(classes=("circle", "square")), D, "--classes circle square"),  # e.g. the demo's toy classes
        (dict(max_images=6), D, "--max-images 6"),
        (dict(scales=(256, 384, 512)), D, "scales Q = [256, 384, 512]"),
        (dict(aggregate="stack"), D, "--aggregate stack"),
        (dict(year=2009), D, "VOC2009"),
        ({}, meta_nets("D", width=0.5), "VGG-D is not the paper's network"),
        ({}, meta_nets("D", batch_norm=True), "VGG-D is not the paper's network"),
    ]:
        _one_reason(mod.not_comparable, replace(paper, **change), nets, why)


def test_caltech_comparable_only_for_the_paper_protocol(tmp_path):
    mod = script("caltech_svm")
    paper, D = mod.Config(root=tmp_path, weights=["default"]), meta_nets("D")
    assert (paper.train_per_class, paper.test_per_class) == (30, 50)  # the protocol when not given
    assert mod.not_comparable(paper, D) == []
    assert mod.not_comparable(mod.Config(root=tmp_path, dataset="caltech256", weights=["default"]), D) == []
    for change, why in [
        (dict(background=False), "--no-background"),
        (dict(splits=2), "--splits 2"),
        (dict(train_per_class=5), "5 training / 50 test images per class"),
        (dict(limit_per_class=8), "--limit-per-class 8"),
        (dict(aggregate="mean"), "--aggregate mean"),
        (dict(weights=[None]), "random weights"),
    ]:
        _one_reason(mod.not_comparable, replace(paper, **change), D, why)


def test_action_comparable_only_for_the_paper_protocol(tmp_path):
    mod = script("voc_action_svm")
    paper = mod.Config(root=tmp_path, weights=["default", "default"])
    assert mod.not_comparable(paper, meta_nets("D", "E")) == []
    _one_reason(mod.not_comparable, replace(paper, max_images=4), meta_nets("D", "E"), "--max-images 4")
    _one_reason(
        mod.not_comparable, replace(paper, models=["D"], weights=["default"]), meta_nets("D"), "no such nets"
    )


def test_classes_absent_from_the_annotations_are_refused_with_the_names_found(tmp_path):
    make_voc(tmp_path, per_split=3, class_files=False)
    with pytest.raises(errors.VOCError, match="unicorn") as e:
        voc.load_voc(tmp_path, 2007, classes=("cat", "unicorn"))
    found = sorted(CLASSES)
    assert "classes found in" in str(e.value) and ", ".join(found) in str(e.value)
    make_voc(tmp_path / "2012", 2012, per_split=3, class_files=False, test_labels=False)
    with pytest.raises(errors.VOCError, match="unicorn"):  # VOC2012's unlabelled test rows count for nothing
        voc.load_voc(tmp_path / "2012", 2012, classes=("cat", "unicorn"))
    # a class that occurs in Annotations/ but not in a short subset of a split only warns
    assert voc.load_voc(tmp_path, 2007, classes=("aeroplane", "boat"), max_images=1).classes


def test_voc_script_stops_on_unknown_classes_before_extracting(tmp_path):
    make_voc(tmp_path, per_split=3, class_files=False)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = ["--root", tmp_path, *TINY, "--out", out, "--classes", "cat", "unicorn"]
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "voc_svm.py"), *map(str, argv)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "unicorn" in line and "aeroplane" in line and "Traceback" not in r.stderr
    assert not (out / "features").exists() and not (out / "results.json").exists()
