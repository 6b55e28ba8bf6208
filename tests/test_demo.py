"""``make demo`` end to end at toy sizes: the real trainer in subprocesses, the VOC protocol, the
report and its summary; the baselines and the chance level against independent computations."""

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import naive_voc07_ap
from PIL import Image
from sklearn.svm import LinearSVC

import vggfeat
from vggfeat.evaluation import stats
from vggfeat.experiments import appendix_b, demo, toy
from vggfeat.experiments.demo import claims as demo_report
from vggfeat.experiments.demo import jobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = replace(demo.QUICK, out=tmp_path_factory.mktemp("demo") / "run", progress=False)
    return cfg, demo.run(cfg)


QS = list(vggfeat.paper_scales(64, (256, 384, 512, 640, 768)))  # appendix B's VOC grid at crop 64
ROWS = {
    "transfer-multiscale",
    "transfer-multiscale-l2",
    "transfer-multiscale-3q",
    "scratch",
    "random",
    "pixels",
}


@pytest.mark.slow
def test_quick_demo_writes_summary_report_and_chart(quick):
    cfg, res = quick
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary == res["summary"]
    names = [r["name"] for r in summary["rows"]]
    assert QS == [73, 110, 146, 183, 219]
    assert set(names) == ROWS | {f"transfer-q{q}" for q in QS}
    for row in summary["rows"]:
        assert 0 <= row["map"] <= 100 and row["std"] >= 0 and isinstance(row["q"], list)
        assert row["map"] == pytest.approx(np.mean(row["per_seed"])) and len(row["per_seed"]) == len(
            cfg.seeds
        )
    by_name = {r["name"]: r for r in summary["rows"]}
    assert by_name["transfer-multiscale"]["q"] == QS and by_name["transfer-q110"]["q"] == [110]
    assert 0 < summary["chance_map"] < 100 and summary["chance_std"] > 0
    assert summary["best_single_q"] in QS and len(summary["source"]["val_top1_err"]) == len(cfg.seeds)
    assert [c["claim"] for c in summary["claims"]] == list(demo_report.CLAIMS)
    for c in summary["claims"]:
        assert set(c) == {"claim", "effect", "ci95", "p", "p_holm", "test", "verdict"}
        assert c["verdict"] in stats.VERDICTS and len(c["ci95"]) == 2
    md = (cfg.out / "report.md").read_text()
    for row in summary["rows"]:
        assert f"| {row['name']}" in md and f"{row['map']:.1f} ± {row['std']:.1f}" in md
    assert "| chance |" in md and "Holm" in md and not list(cfg.out.glob("*.tmp"))
    for png in ("map.png", "source-s0/curves.png", "scratch-s0/curves.png"):
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
def test_nets_anneal_and_have_the_papers_geometry_and_the_random_baseline_their_architecture(quick):
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
    again = appendix_b.random_weights(
        cfg.out / "source-s0" / "final.safetensors", cfg.out / "r2.safetensors", seed=0
    )
    assert vggfeat.fingerprint(vggfeat.vgg(None, weights=str(again))) == vggfeat.fingerprint(rand)
    for run in ("source-s0", "scratch-s0"):  # both annealed: cosine to lr/100
        config = json.loads((cfg.out / run / "config.json").read_text())
        assert config["schedule"] == "cosine"


def test_demo_preset_anneals():
    """The preset the demo trains with ends its learning rate at lr/100 (not the plateau rule,
    which never fires in a short run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_imagenet", REPO / "recipes" / "train_imagenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    preset = mod.PRESETS["demo"]
    assert preset.schedule == "cosine" and preset.epochs == demo.DemoConfig().source_epochs


def _target(tmp_path, train=20, val=6, test=2):
    _, devkit = toy.generate(
        tmp_path / "data",
        toy.ToyConfig(source_train=1, source_val=1, target_train=train, target_val=val, target_test=test),
    )
    return devkit


def _split_entries(devkit, split):
    main = devkit / "VOC2007" / "ImageSets" / "Main"
    want = set()
    for c in toy.TARGET_CLASSES:
        for line in (main / f"{c}_{split}.txt").read_text().splitlines():
            image_id, label = line.split()
            if label == "1":
                want.add(f"{c}/{image_id}.jpg")
    return want


def test_scratch_folder_holds_only_train_images_with_a_holdout_of_every_class(tmp_path):
    """The from-scratch net never sees the target's val or test images: train/ and the holdout
    val/ split the train images, each image under each class it shows, both sides the same
    classes."""
    devkit = _target(tmp_path)
    root, n = demo.target_imagefolder(devkit, tmp_path / "folder", holdout=0.2, seed=0)
    got = {f: {str(p.relative_to(root / f)) for p in (root / f).rglob("*.jpg")} for f in ("train", "val")}
    ids = lambda entries: {e.split("/")[1] for e in entries}  # noqa: E731
    assert not ids(got["train"]) & ids(got["val"])  # an image is on one side only
    assert got["train"] | got["val"] <= _split_entries(devkit, "train")
    assert not ids(got["train"] | got["val"]) & ids(
        _split_entries(devkit, "val") | _split_entries(devkit, "test")
    )
    classes = lambda f: sorted(p.name for p in (root / f).iterdir())  # noqa: E731
    assert classes("train") == classes("val")
    n_images = len((devkit / "VOC2007/ImageSets/Main/train.txt").read_text().split())
    assert round(0.2 * n_images) <= len(ids(got["val"])) <= round(0.2 * n_images) + len(toy.TARGET_CLASSES)
    assert n == len(got["train"])
    root2, n2 = demo.target_imagefolder(devkit, tmp_path / "twice", holdout=0.2, seed=0, repeat=2)
    assert n2 == 2 * n and {p.name for p in (root2 / "val").rglob("*.jpg")} == {
        p.name for p in (root / "val").rglob("*.jpg")
    }
    first = next((root2 / "train").rglob("*-0.jpg"))
    assert first.stat().st_ino == first.with_name(first.name.replace("-0", "-1")).stat().st_ino  # linked


def _result(test_map, val_map, scores):
    from vggfeat.evaluation.svm import VOCResult

    return VOCResult(aps=None, map=test_map, scores=scores, C=1.0, val_scores={1.0: val_map}, model=None)


def test_claims_on_scripted_systems_follow_the_statistics_module():
    """judge() applies the test each claim names, through vggfeat.stats: Welch for different
    nets, a permutation test against chance, a paired test for two readings of the same nets;
    the verdicts are those of the independent scipy tests on the same numbers, and the best
    single Q is the one with the best validation mAP, whatever the test split says."""
    from scipy import stats as st

    rng = np.random.default_rng(0)
    labels = rng.choice([1, -1, -1, -1], size=(200, 4))
    good = lambda k: labels + rng.normal(0, 0.3 + 0.01 * k, labels.shape)  # noqa: E731
    bad = lambda k: rng.normal(0, 1, labels.shape)  # noqa: E731
    systems = {
        "transfer-multiscale": demo_report.System("w", "d", [73, 110]),
        "transfer-q73": demo_report.System("w", "d", [73]),
        "transfer-q110": demo_report.System("w", "d", [110]),
        "scratch": demo_report.System("w", "d", []),
        "random": demo_report.System("w", "d", []),
        "pixels": demo_report.System("w", "d", []),
    }
    maps = {
        "transfer-multiscale": ([0.80, 0.82, 0.81], good),
        "transfer-q73": ([0.70, 0.71, 0.72], good),  # best on val, worse on test
        "transfer-q110": ([0.79, 0.83, 0.80], good),
        "scratch": ([0.40, 0.41, 0.39], bad),
        "random": ([0.30, 0.45, 0.38], bad),
        "pixels": ([0.20], bad),
    }
    for name, (values, make) in maps.items():
        for k, v in enumerate(values):
            val = 0.9 if name == "transfer-q73" else 0.5
            systems[name].add(_result(v, val, make(k)))
    assert demo.best_single_q(systems, [73, 110]) == 73
    chance = rng.normal(0.25, 0.02, 500)
    claims = demo_report.judge(systems, chance, 73, labels, n=200)
    assert [c.claim for c in claims] == list(demo_report.CLAIMS)
    by = {c.claim: c for c in claims}
    t = st.ttest_ind([80, 82, 81], [40, 41, 39], equal_var=False)
    assert by["transfer > scratch"].verdict == "holds" and t.pvalue < 0.05
    assert by["transfer > scratch"].effect == pytest.approx(81 - 40)
    assert by["multi-scale > best single Q"].effect == pytest.approx(81 - 71)
    assert by["random > chance"].effect == pytest.approx(np.mean([30, 45, 38]) - 100 * chance.mean())
    assert by["pixels > chance"].verdict == "does not hold"  # 20 < chance 25
    p = [c.p for c in claims]
    assert [c.p_holm for c in claims] == pytest.approx(
        [
            min(1, max((len(p) - r) * p[j] for r, j in enumerate(np.argsort(p)) if p[j] <= p[i]))
            for i in range(5)
        ]
    )


def test_pixel_baseline_matches_a_naive_reimplementation(tmp_path):
    cfg = toy.ToyConfig(source_train=1, source_val=1, target_train=30, target_val=30, target_test=40)
    _, devkit = toy.generate(tmp_path / "data", cfg)
    got = appendix_b.pixel_baseline(devkit)
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
        jobs.run_one(cmd, tmp_path / "step", tmp_path / "step" / "never.txt", desc="failing step", cfg=cfg)
    assert not (tmp_path / "step" / jobs.STAMP).exists()


def test_cli_flags():
    parse = lambda *a: demo.config_from_args(demo.get_args_parser().parse_args(list(a)))  # noqa: E731
    cfg = parse("--quick", "--seed", "5", "--fresh")
    assert cfg.data().seed == 5 and cfg.fresh and cfg.target_test == demo.QUICK.target_test
    full = parse("--seeds", "3", "4")
    assert full.data() == demo.DemoConfig().data() and full.seeds == (3, 4)
    assert demo.DemoConfig().seeds == (0, 1, 2) and demo.DemoConfig().seed == 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--seeds"], "--seeds: expected at least one argument"),
        (["--seeds", "1", "1"], "--seeds 1 1: give distinct training seeds >= 0"),
        (["--seeds", "-1"], "--seeds -1: give distinct training seeds >= 0"),
        (["--epochs", "3"], "unrecognized arguments: --epochs 3"),
        (["--scratch-holdout", "1.5"], "--scratch-holdout 1.5: a share between 0 and 1"),
    ],
)
def test_bad_options_end_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("usage:") is False


def test_a_failing_job_stops_the_ones_beside_it(tmp_path):
    cfg = replace(demo.QUICK, out=tmp_path, progress=False)
    slow = jobs.Job([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "slow", tmp_path / "x")
    bad = jobs.Job(
        [sys.executable, "-c", "import sys; print('broke'); sys.exit(4)"], tmp_path / "bad", tmp_path / "y"
    )
    started = time.time()
    with pytest.raises(RuntimeError, match=r"(?s)exit code 4.*broke"):
        jobs.run_jobs([slow, bad], parallel=2, desc="two", cfg=cfg)
    assert time.time() - started < 30 and slow.proc.poll() is not None  # killed, not waited for
    assert not (tmp_path / "slow" / jobs.STAMP).exists()


def test_a_step_reruns_only_when_its_command_or_inputs_change(tmp_path):
    cfg = replace(demo.QUICK, out=tmp_path, progress=False)
    product = tmp_path / "step" / "made.txt"
    cmd = [sys.executable, "-c", f"open({str(product)!r}, 'a').write('x')"]
    run = lambda c, inputs: jobs.run_one(c, tmp_path / "step", product, desc="s", cfg=cfg, inputs=inputs)  # noqa: E731
    assert run(cmd, "data v1") is True
    assert run(cmd, "data v1") is False and product.read_text() == "x"  # reused
    assert run(cmd, "data v2") is True  # other data: made again
    assert run([*cmd, "# other flags"], "data v2") is True
    assert run(cmd, "data v2") is True and jobs.run_one(
        cmd, tmp_path / "step", product, desc="s", cfg=replace(cfg, fresh=True), inputs="data v2"
    )


def test_demo_descriptors_are_the_librarys_appendix_b_aggregation(tmp_path):
    """Per-scale descriptors aggregated by the demo equal vggfeat.extract's own mean over Q,
    with one L2 at the end and with L2 per Q (normalize="per_scale"), computed independently."""
    torch.manual_seed(0)
    net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=5, crop=64).eval()
    path = vggfeat.save_weights(net, tmp_path / "net.safetensors")
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((96, 128), (128, 96))
    ]
    X, scales = appendix_b.per_scale_descriptors(path, images, None, False)
    assert scales == QS and X.shape == (2, 5, 32)
    for normalize in (True, "per_scale"):
        want = vggfeat.extract(
            images, model=net, scales=QS, aggregate="mean", normalize=normalize, progress=False
        )
        np.testing.assert_allclose(appendix_b.over_scales(X, normalize=normalize), want, rtol=1e-5, atol=1e-6)
