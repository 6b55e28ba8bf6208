"""``make demo`` end to end at toy sizes: the real trainer and benchmark scripts in subprocesses."""

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.svm import LinearSVC

import vggfeat
from vggfeat import demo, toy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = replace(demo.QUICK, out=tmp_path_factory.mktemp("demo") / "run", progress=False)
    return cfg, demo.run(cfg)


def test_quick_demo_writes_report(quick):
    cfg, res = quick
    assert set(res["maps"]) == {"multi-scale", "single-scale", "random weights", "raw pixels"}
    assert all(0 <= m <= 1 for m in res["maps"].values())
    md = (cfg.out / "report.md").read_text()
    for label, m in res["maps"].items():
        assert f"| {label} |" in md and f"{100 * m:.1f}" in md
    for png in ("map.png", "train/curves.png", "multi_scale/ap_per_class.png"):
        with Image.open(cfg.out / png) as img:
            assert img.size[0] > 100
    # the source error comes from the trainer's own log
    last = json.loads((cfg.out / "train" / "metrics.jsonl").read_text().splitlines()[-1])
    assert res["source"]["val_top1_err"] == last["val_top1_err"]
    # each benchmark ran with the weights and scales the report names
    multi = json.loads((cfg.out / "multi_scale" / "results.json").read_text())
    assert multi["config"]["scales"] == list(cfg.scales)
    (numbers,) = multi["results"].values()
    assert numbers["map"] == pytest.approx(res["maps"]["multi-scale"])


def test_random_baseline_is_the_trained_architecture(quick):
    cfg, _ = quick
    trained = vggfeat.vgg(None, weights=str(cfg.out / "train" / "final.safetensors"))
    rand = vggfeat.vgg(None, weights=str(cfg.out / "random.safetensors"))
    assert rand.arch == trained.arch and rand.preprocess == trained.preprocess
    assert vggfeat.fingerprint(rand) != vggfeat.fingerprint(trained)
    again = demo.random_weights(cfg.out / "train" / "final.safetensors", cfg.out / "r2.safetensors", seed=0)
    assert vggfeat.fingerprint(vggfeat.vgg(None, weights=str(again))) == vggfeat.fingerprint(rand)


def test_rerun_reuses_every_step_and_gives_the_same_numbers(quick):
    cfg, first = quick
    stamp = (cfg.out / "train" / "final.safetensors").stat().st_mtime_ns
    second = demo.run(cfg)
    assert second["maps"] == first["maps"]
    assert (cfg.out / "train" / "final.safetensors").stat().st_mtime_ns == stamp


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
    assert demo.config_from_args(demo.get_args_parser().parse_args([])).data == replace(
        demo.DemoConfig().data, seed=0
    )
