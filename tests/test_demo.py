"""``make demo`` end to end at toy sizes: the real trainer in subprocesses, the VOC protocol, the
report and its summary; the baselines and the chance level against independent computations."""

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.svm import LinearSVC

import vggfeat
from vggfeat import demo, demo_report, toy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = replace(demo.QUICK, out=tmp_path_factory.mktemp("demo") / "run", progress=False)
    return cfg, demo.run(cfg)


ROWS = {"transfer-multiscale", "scratch", "random", "pixels"}


@pytest.mark.slow
def test_quick_demo_writes_summary_report_and_chart(quick):
    cfg, res = quick
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary == res["summary"]
    names = [r["name"] for r in summary["rows"]]
    qs = list(vggfeat.paper_scales(64))  # the demo net's crop: the paper's Q at crop 64
    assert set(names) == ROWS | {f"transfer-q{q}" for q in qs}
    for row in summary["rows"]:
        assert 0 <= row["map"] <= 100 and row["std"] >= 0 and isinstance(row["q"], list)
    by_name = {r["name"]: r for r in summary["rows"]}
    assert by_name["transfer-multiscale"]["q"] == qs and by_name["transfer-q110"]["q"] == [110]
    assert 0 < summary["chance_map"] < 100
    md = (cfg.out / "report.md").read_text()
    for row in summary["rows"]:
        assert f"| {row['name']} |" in md and f"{row['map']:.1f} ± {row['std']:.1f}" in md
    assert "| chance |" in md and "verdict" in md
    for png in ("map.png", "source-s0/curves.png"):
        with Image.open(cfg.out / png) as img:
            assert img.size[0] > 100


@pytest.mark.slow
def test_quick_demo_is_deterministic(quick, tmp_path):
    """Two fresh runs into different folders give identical summaries (the rerun above reuses
    nothing of the first: data, trained nets and descriptors are all made again)."""
    cfg, res = quick
    again = demo.run(replace(cfg, out=tmp_path / "again"))
    assert again["summary"] == res["summary"]


@pytest.mark.slow
def test_nets_have_the_papers_geometry_and_the_random_baseline_their_architecture(quick):
    cfg, _ = quick
    trained = vggfeat.vgg(None, weights=str(cfg.out / "source-s0" / "final.safetensors"))
    assert trained.crop == 64 and trained.kernel == 2  # fc6 covers the 2x2 pool5 map of a 64 crop
    assert isinstance(trained.avgpool, torch.nn.Identity)
    scratch = vggfeat.vgg(None, weights=str(cfg.out / "scratch-s0" / "final.safetensors"))
    classes = [p for p in (cfg.out / "target_imagefolder" / "train").iterdir() if p.is_dir()]
    assert scratch.arch == {**trained.arch, "num_classes": len(classes)}
    rand = vggfeat.vgg(None, weights=str(cfg.out / "random-s0.safetensors"))
    assert rand.arch == trained.arch and rand.preprocess == trained.preprocess
    assert vggfeat.fingerprint(rand) != vggfeat.fingerprint(trained)
    again = demo.random_weights(
        cfg.out / "source-s0" / "final.safetensors", cfg.out / "r2.safetensors", seed=0
    )
    assert vggfeat.fingerprint(vggfeat.vgg(None, weights=str(again))) == vggfeat.fingerprint(rand)


@pytest.mark.slow
def test_scratch_budget_matches_the_source_in_sgd_steps(quick):
    cfg, _ = quick
    src = json.loads((cfg.out / "source-s0" / "config.json").read_text())
    scr = json.loads((cfg.out / "scratch-s0" / "config.json").read_text())
    n_src = sum(1 for _ in (cfg.out / "data" / "source" / "train").rglob("*.jpg"))
    n_scr = sum(1 for _ in (cfg.out / "target_imagefolder" / "train").rglob("*.jpg"))
    steps = lambda c, n: c["epochs"] * math.ceil(n / c["batch_size"])  # noqa: E731
    assert abs(steps(scr, n_scr) - steps(src, n_src)) <= math.ceil(n_scr / scr["batch_size"])


def test_target_imagefolder_has_each_trainval_image_under_each_class_it_shows(tmp_path):
    _, devkit = toy.generate(
        tmp_path / "data",
        toy.ToyConfig(source_train=1, source_val=1, target_train=8, target_val=6, target_test=2),
    )
    root, n = demo.target_imagefolder(devkit, tmp_path / "folder")
    main = devkit / "VOC2007" / "ImageSets" / "Main"
    for folder, split in (("train", "trainval"), ("val", "val")):
        want = set()
        for c in toy.TARGET_CLASSES:
            for line in (main / f"{c}_{split}.txt").read_text().splitlines():
                image_id, label = line.split()
                if label == "1":
                    want.add(f"{c}/{image_id}.jpg")
        got = {str(p.relative_to(root / folder)) for p in (root / folder).rglob("*.jpg")}
        assert got == want
    assert n == len(list((root / "train").rglob("*.jpg")))
    root2, n2 = demo.target_imagefolder(devkit, tmp_path / "twice", repeat=2)
    assert n2 == 2 * n and len(list((root2 / "val").rglob("*.jpg"))) == len(
        list((root / "val").rglob("*.jpg"))
    )
    first = next((root2 / "train").rglob("*-0.jpg"))
    assert first.stat().st_ino == first.with_name(first.name.replace("-0", "-1")).stat().st_ino  # linked


def test_chance_level_matches_random_scores_scored_naively():
    rng = np.random.default_rng(1)
    labels = rng.choice([1, -1, -1, -1, 0], size=(60, 4))
    mean, std = demo_report.chance_map(labels, permutations=300, seed=0)
    naive = [np.mean([naive_voc07_ap(rng.random(60), labels[:, k]) for k in range(4)]) for _ in range(300)]
    assert abs(mean - np.mean(naive)) < 3 * np.std(naive) / np.sqrt(300) + 1e-3
    assert std == pytest.approx(np.std(naive), rel=0.25)


def test_verdicts_on_scripted_numbers():
    rows = demo_report.Rows()
    for name, values in {
        "transfer-multiscale": [0.60, 0.62, 0.61],
        "transfer-q73": [0.50, 0.52, 0.51],
        "transfer-q110": [0.59, 0.63, 0.61],  # the best single Q: the gap is inside the spread
        "scratch": [0.40, 0.41, 0.39],
        "random": [0.30, 0.45, 0.38],  # noisy: within the noise of scratch
        "pixels": [0.20],
    }.items():
        for v in values:
            rows.add(name, v, "w", "d", [])
    got = {
        claim.split(" (")[0]: verdict
        for claim, verdict, _, _ in demo_report.verdicts(rows, (0.25, 0.01), [73, 110])
    }
    assert got == {
        "transfer beats training from scratch on the target": "holds",
        "from scratch beats random weights": "within the noise",
        "random weights beat chance": "holds",
        "raw pixels beat chance": "does not hold",
        "multi-scale Q beats the best single Q": "within the noise",
    }


def naive_voc07_ap(scores, labels):
    """11-point AP written from the devkit's description, independently of vggfeat.svm."""
    keep = labels != 0
    s, y = scores[keep], labels[keep] > 0
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(y[order])
    prec, rec = tp / np.arange(1, len(tp) + 1), tp / max(y.sum(), 1)
    return np.mean([max([p for p, r in zip(prec, rec) if r >= t] or [0]) for t in np.linspace(0, 1, 11)])


def test_pixel_baseline_matches_a_naive_reimplementation(tmp_path):
    cfg = toy.ToyConfig(source_train=1, source_val=1, target_train=30, target_val=30, target_test=40)
    _, devkit = toy.generate(tmp_path / "data", cfg)
    got = demo.pixel_baseline(devkit)
    main = devkit / "VOC2007" / "ImageSets" / "Main"
    ids = {s: (main / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}

    def features(split):
        X = np.stack(
            [
                np.asarray(
                    Image.open(devkit / "VOC2007" / "JPEGImages" / f"{i}.jpg").resize(
                        (32, 32), Image.BILINEAR
                    ),
                    np.float64,
                ).ravel()
                for i in ids[split]
            ]
        )
        return X

    def labels(split, c):
        rows = dict(line.split() for line in (main / f"{c}_{split}.txt").read_text().splitlines())
        return np.array([int(rows[i]) for i in ids[split]])

    train, val, test = features("train"), features("val"), features("test")
    trainval = np.concatenate([train, val])
    mu, sd = trainval.mean(0), trainval.std(0)
    sd[sd == 0] = 1

    def prep(X):
        Z = (X - mu) / sd
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    def mean_ap(fit_X, fit_y, test_X, test_y, C):
        aps = []
        for k in range(fit_y.shape[1]):
            keep = fit_y[:, k] != 0
            y = fit_y[keep, k] > 0
            if (test_y[:, k] > 0).sum() == 0:
                continue
            s = (
                np.zeros(len(test_X))
                if y.all() or not y.any()
                else LinearSVC(C=C, max_iter=10_000).fit(fit_X[keep], y).decision_function(test_X)
            )
            aps.append(naive_voc07_ap(s, test_y[:, k]))
        return np.mean(aps)

    classes = list(toy.TARGET_CLASSES)
    Y = {s: np.stack([labels(s, c) for c in classes], 1) for s in ids}
    grid = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    val_maps = [mean_ap(prep(train), Y["train"], prep(val), Y["val"], c) for c in grid]
    best = grid[int(np.argmax(val_maps))]
    want = mean_ap(prep(trainval), np.concatenate([Y["train"], Y["val"]]), prep(test), Y["test"], best)
    assert not math.isnan(got) and got == pytest.approx(want, abs=2e-3)


def test_failed_step_reports_its_log(tmp_path):
    cfg = replace(demo.QUICK, out=tmp_path, progress=False)
    cmd = [sys.executable, "-c", "import sys; print('the reason it broke'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exit code 3.*the reason it broke"):
        demo._run(cmd, tmp_path / "step", tmp_path / "step" / "never.txt", desc="failing step", cfg=cfg)
    assert not (tmp_path / "step" / demo.STAMP).exists()


def test_cli_flags():
    cfg = demo.config_from_args(demo.get_args_parser().parse_args(["--quick", "--seed", "5", "--fresh"]))
    assert cfg.data.seed == 5 and cfg.fresh and cfg.data.target_test == demo.QUICK.data.target_test
    full = demo.config_from_args(demo.get_args_parser().parse_args(["--seeds", "3", "4"]))
    assert full.data == replace(demo.DemoConfig().data, seed=0) and full.seeds == (3, 4)
    assert demo.DemoConfig().seeds == (0, 1, 2)


def test_a_step_reruns_only_when_its_command_or_inputs_change(tmp_path):
    cfg = replace(demo.QUICK, out=tmp_path, progress=False)
    product = tmp_path / "step" / "made.txt"
    cmd = [sys.executable, "-c", f"open({str(product)!r}, 'a').write('x')"]
    run = lambda c, inputs: demo._run(c, tmp_path / "step", product, desc="s", cfg=cfg, inputs=inputs)  # noqa: E731
    assert run(cmd, "data v1") is True
    assert run(cmd, "data v1") is False and product.read_text() == "x"  # reused
    assert run(cmd, "data v2") is True  # other data: made again
    assert run([*cmd, "# other flags"], "data v2") is True
    assert run(cmd, "data v2") is True and demo._run(
        cmd, tmp_path / "step", product, desc="s", cfg=replace(cfg, fresh=True), inputs="data v2"
    )
