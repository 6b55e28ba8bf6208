"""``make demo``: the library's main job, end to end, on data generated on the spot.

A fresh machine without internet has no ImageNet, no VOC and no pretrained weights, so the demo
draws its own (:mod:`vggfeat.toy`) and then does for real what the paper's appendix B does:

1. generate a source classification set (ImageFolder) and a target set (VOC2007 layout) whose
   classes differ but share visual primitives;
2. train a narrow VGG-A on the source with the real trainer
   (``accelerate launch recipes/train_imagenet.py --preset demo``, scale jitter, Sec. 3.1);
3. run the real VOC benchmark (``benchmarks/voc_svm.py``: appendix-B descriptors, linear SVMs,
   VOC2007 11-point mAP) with the trained weights at several scales and at one scale, and with
   the same architecture at random weights;
4. add a raw-pixel baseline (32x32 thumbnails, standardised, same SVM protocol) and write
   ``runs/demo/report.md`` with the table, the training curves and the per-class AP chart.

Transfer is real when the trained net's descriptors beat random weights and raw pixels: the
target classes are never seen in training. Every step is seeded; a rerun reuses the data and
every finished step whose command is unchanged (``--fresh`` redoes them).

    python -m vggfeat.demo            # ~10 minutes on 2 CPU cores
    python -m vggfeat.demo --quick    # a tiny smoke run (about a minute), numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import toy

log = logging.getLogger("vggfeat")
REPO = Path(__file__).resolve().parents[1]  # recipes/ and benchmarks/ live beside the package
STAMP = "demo-step.json"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and flags of one demo run. The defaults are ``make demo``; :data:`QUICK` is the
    smoke-test size. ``train_args`` override the trainer's ``demo`` preset."""

    out: Path = Path("runs/demo")
    data: toy.ToyConfig = toy.ToyConfig(
        source_train=80, source_val=15, target_train=150, target_val=150, target_test=300
    )
    # On top of the trainer's demo preset (narrow VGG-A, 64 px crops, S jittered in [64, 96]):
    # batch norm and no dropout make a 2-core budget of epochs enough to learn the source task.
    train_args: tuple[str, ...] = ()  # the demo preset as it is
    # Appendix B averages over several Q; fc7 of the dense net needs Q >= 224 (a 7x7 pool5 map).
    scales: tuple[int, ...] = (224, 320, 416)
    single_scale: int = 320
    batch_size: int | None = None
    fresh: bool = False
    progress: bool = True


QUICK = DemoConfig(
    data=toy.ToyConfig(source_train=6, source_val=2, target_train=10, target_val=10, target_test=14),
    train_args=("--epochs", "1"),
    scales=(224, 256),
    single_scale=224,
)


@dataclass
class Step:
    """Bookkeeping of one run: wall seconds per step and whether it was reused."""

    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


# --- subprocesses ------------------------------------------------------------------------------


def _env() -> dict:
    # The scripts must import this very vggfeat (the checkout the demo runs from), offline.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _script(*parts: str) -> Path:
    path = REPO.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the demo runs the repository's scripts, so run it from a "
            "checkout of vggfeat (git clone ...; make demo), not from an installed wheel"
        )
    return path


def _stamped(out: Path, cmd: list[str], product: Path, fresh: bool) -> bool:
    """True if ``out`` already holds ``product`` made by exactly ``cmd``."""
    stamp = out / STAMP
    return not fresh and product.exists() and stamp.exists() and json.loads(stamp.read_text()) == cmd


def _run(
    cmd: list[str], out: Path, product: Path, *, desc: str, cfg: DemoConfig, poll=None, unit: str = "it"
) -> bool:
    """Run ``cmd`` (output to ``<out>.log``) unless its product is already there; returns True
    if it ran. ``poll(bar)`` updates a progress bar while the command runs."""
    from tqdm.auto import tqdm

    if _stamped(out, cmd, product, cfg.fresh):
        log.info("%s: reusing %s", desc, product)
        return False
    # A stale folder would be resumed (trainer) or refused (feature cache): start clean.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    logfile = out.parent / f"{out.name}.log"
    with open(logfile, "w") as f, tqdm(desc=desc, disable=not cfg.progress, unit=unit) as bar:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
        while proc.poll() is None:
            time.sleep(1.0)
            if poll:
                poll(bar)
    if proc.returncode != 0 or not product.exists():
        tail = "".join(logfile.read_text(errors="replace").splitlines(True)[-25:])
        raise RuntimeError(f"{desc} failed (exit code {proc.returncode}); see {logfile}. Its end:\n{tail}")
    (out / STAMP).write_text(json.dumps(cmd))
    return True


def _poll_epochs(metrics: Path, total: int):
    def poll(bar):
        bar.total = total
        try:
            bar.n = len(metrics.read_text().splitlines())
        except OSError:
            return
        bar.refresh()

    return poll


def _poll_images(cache: Path):
    """Images done so far, read off the extractor's feature cache (``done.npy``)."""

    def poll(bar):
        try:
            done = np.load(cache / "done.npy", mmap_mode="r")
        except (OSError, ValueError):  # not there yet, or being created
            return
        bar.total, bar.n = done.shape[0], int(done.all(1).sum())
        bar.refresh()

    return poll


# --- the steps ---------------------------------------------------------------------------------


def train(cfg: DemoConfig, source: Path) -> tuple[Path, bool]:
    """Step 2: the trainer's ``demo`` preset on the source set -> (``<out>/train/final.safetensors``,
    whether it ran rather than was reused)."""
    out = cfg.out / "train"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(_script("recipes", "train_imagenet.py")), "--preset", "demo", "--data", str(source),
        "--output-dir", str(cfg.out), "--name", "train", "--seed", str(cfg.data.seed), "--no-progress",
        *cfg.train_args,
    ]  # fmt: skip
    flags = list(cfg.train_args)
    epochs = int(flags[flags.index("--epochs") + 1]) if "--epochs" in flags else None
    poll = _poll_epochs(out / "metrics.jsonl", epochs)
    ran = _run(cmd, out, out / "final.safetensors", desc="train on source", cfg=cfg, poll=poll, unit="epoch")
    return out / "final.safetensors", ran


def random_weights(trained: Path, path: Path, *, seed: int) -> Path:
    """The trained net's architecture and preprocessing with seeded random (Glorot) weights, so
    that the comparison isolates what training learned."""
    import torch

    from .models import VGG
    from .weights import vgg
    from .weights import save_weights

    net = vgg(None, weights=str(trained))
    torch.manual_seed(seed)
    fresh = VGG(**net.arch, preprocess=net.preprocess)
    return save_weights(fresh, path, provenance=f"random init (seed {seed}) of {trained.name}'s architecture")


def benchmark(cfg: DemoConfig, devkit: Path, weights: Path, scales, name: str) -> tuple[dict, bool]:
    """Step 3: ``benchmarks/voc_svm.py`` on the target set -> (its ``results.json``, whether it
    ran rather than was reused)."""
    out = cfg.out / name
    cmd = [
        sys.executable, str(_script("benchmarks", "voc_svm.py")), "--root", str(devkit), "--year", "2007",
        "--classes", *toy.TARGET_CLASSES, "--model", "A", "--weights", str(weights),
        "--scales", *map(str, scales), "--aggregate", "mean", "--out", str(out), "--seed", str(cfg.data.seed),
    ]  # fmt: skip
    if cfg.batch_size:
        cmd += ["--batch-size", str(cfg.batch_size)]
    poll = _poll_images(out / "features")
    ran = _run(
        cmd, out, out / "results.json", desc=f"target descriptors, {name}", cfg=cfg, poll=poll, unit="img"
    )
    return json.loads((out / "results.json").read_text()), ran


def pixel_baseline(devkit: Path, *, side: int = 32) -> float:
    """Step 4: raw pixels as the descriptor (``side`` x ``side`` RGB thumbnail, flattened,
    standardised on the SVM training images, L2-normalised like the VGG descriptor), through the
    same VOC2007 protocol as the benchmark; returns the test mAP."""
    from PIL import Image
    from sklearn.preprocessing import StandardScaler, normalize

    from . import svm, voc
    from .data import open_image

    data = voc.load_voc(devkit, 2007, classes=tuple(toy.TARGET_CLASSES))
    proto = voc.protocol(data)
    X = np.stack(
        [
            np.asarray(open_image(p).resize((side, side), Image.BILINEAR), np.float32).ravel()
            for p in data.images
        ]
    )
    X = normalize(StandardScaler().fit(X[proto.fit]).transform(X))
    res = svm.voc_classification(
        X, data.labels, select=proto.select, fit=proto.fit, test=proto.test, ap=proto.ap
    )
    return res.map


# --- report ------------------------------------------------------------------------------------


def _map_of(results: dict) -> float:
    (numbers,) = results["results"].values()  # one net per benchmark run
    return float(numbers["map"])


def _last_metrics(metrics: Path) -> dict:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return rows[-1]


def report(cfg: DemoConfig, maps: dict[str, tuple[str, str, float]], source_err: dict, steps: Step) -> str:
    """Write ``<out>/report.md`` and ``<out>/map.png``; returns the markdown.

    ``maps``: row label -> (weights, scales, mAP in [0, 1])."""
    from . import plots

    rows = [[label, w, q, 100 * m] for label, (w, q, m) in maps.items()]
    trained, random_, pixels = (maps[k][2] for k in ("multi-scale", "random weights", "raw pixels"))
    md = "# vggfeat demo: transfer from a toy source task to a toy VOC2007 target\n\n"
    md += plots.markdown_table(["descriptor", "weights", "scales Q", "target mAP (%)"], rows) + "\n"
    md += (
        f"- Trained multi-scale descriptor over random weights: **{100 * (trained - random_):+.1f}** mAP "
        f"points; over raw pixels: **{100 * (trained - pixels):+.1f}**.\n"
        f"- Source task (24 shape-texture classes), validation top-1 / top-5 error: "
        f"{100 * source_err['val_top1_err']:.1f}% / {100 * source_err['val_top5_err']:.1f}% "
        f"after {source_err['epoch'] + 1} epochs.\n"
        f"- Target: {len(toy.TARGET_CLASSES)} classes ({', '.join(toy.TARGET_CLASSES)}), none of them a "
        "source class; VOC2007 protocol (C chosen train -> val, SVMs refit on trainval, 11-point AP "
        "on test).\n"
        f"- Wall time per step (s): "
        + ", ".join(
            f"{k} {v:.0f}" + (" (reused)" if k in steps.reused else "") for k, v in steps.seconds.items()
        )
        + ".\n\n"
        "![target mAP](map.png)\n\n"
        "Training curves (source): ![curves](train/curves.png)\n\n"
        "Per-class AP, trained net, multi-scale: ![AP](multi_scale/ap_per_class.png)\n\n"
        "Details: [training](train/), [multi-scale](multi_scale/report.md), "
        "[single-scale](single_scale/report.md), [random weights](random_weights/report.md).\n"
    )
    (cfg.out / "report.md").write_text(md)
    plots.bar_chart(
        cfg.out / "map.png",
        {label: m for label, (_, _, m) in maps.items()},
        title="target mAP by descriptor",
        ylabel="mAP (%)",
    )
    return md


# --- the whole run -----------------------------------------------------------------------------


def run(cfg: DemoConfig = DemoConfig()) -> dict:
    """Every step in order; returns the numbers of the report (mAPs in [0, 1])."""
    steps = Step()
    # Subprocesses run in the repository root: hand them absolute paths.
    cfg = replace(cfg, out=Path(cfg.out).resolve())

    def timed(name, fn, *args, **kw):
        t = time.time()
        out = fn(*args, **kw)
        steps.seconds[name] = time.time() - t
        return out

    cfg.out.mkdir(parents=True, exist_ok=True)
    source, devkit = timed("data", toy.generate, cfg.out / "data", cfg.data, progress=cfg.progress)
    weights, ran = timed("train", train, cfg, source)
    steps.reused += [] if ran else ["train"]
    rand = random_weights(weights, cfg.out / "random.safetensors", seed=cfg.data.seed)
    multi, single = cfg.scales, (cfg.single_scale,)
    q = lambda s: ", ".join(map(str, s))
    maps = {}
    for label, name, w, scales, wname in (
        ("multi-scale", "multi_scale", weights, multi, "trained on source"),
        ("single-scale", "single_scale", weights, single, "trained on source"),
        ("random weights", "random_weights", rand, multi, "random (same architecture)"),
    ):
        res, ran = timed(name, benchmark, cfg, devkit, w, scales, name)
        steps.reused += [] if ran else [name]
        maps[label] = (wname, q(scales), _map_of(res))
    maps["raw pixels"] = ("none (32x32 RGB)", "-", timed("pixels", pixel_baseline, devkit))
    steps.reused = [
        k for k in ("train", "multi_scale", "single_scale", "random_weights") if steps.seconds[k] < 2
    ]
    source_err = _last_metrics(cfg.out / "train" / "metrics.jsonl")
    md = report(cfg, maps, source_err, steps)
    return dict(
        maps={k: v[2] for k, v in maps.items()}, source=source_err, markdown=md, seconds=steps.seconds
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="run folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="data, training and random-weights seed")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers meaningless")
    p.add_argument("--fresh", action="store_true", help="redo every step (the data is reused if identical)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def config_from_args(args) -> DemoConfig:
    base = QUICK if args.quick else DemoConfig()
    return replace(
        base, out=args.out, data=replace(base.data, seed=args.seed), fresh=args.fresh, progress=args.progress
    )


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    cfg = config_from_args(get_args_parser().parse_args(argv))
    result = run(cfg)
    print("\n" + result["markdown"])
    print(f"report: {cfg.out / 'report.md'}")
    return result


if __name__ == "__main__":
    main()
