"""``make demo``: the paper's transfer experiment (appendix B) in miniature, with baselines that
carry signal, the chance level, the spread over seeds and every claim tested.

1. generate the toy data (:mod:`vggfeat.toy`, whose docstring writes down the scale rules the
   design follows): a classification source set (ImageFolder) and a multi-label target set
   (VOC2007 layout) whose classes are new combinations of the source's parts;
2. train a narrow VGG-A on the source with the real trainer (``accelerate launch
   recipes/train_imagenet.py --preset demo``: crop 64 with the paper's geometry, S jittered in
   [73, 146], a cosine schedule annealed to lr/100 over 40 epochs), once per training seed;
3. train the same architecture from scratch on the target's ``train`` split with the same
   recipe (multi-label images enter once per class present), its curve read on a holdout carved
   out of ``train``: neither the target's ``val`` nor its ``test`` split is ever trained on;
4. describe the target images with the appendix-B descriptor (dense fc7, global average pooling,
   flip averaging, mean over appendix B's VOC scales Q = 73 ... 219 at crop 64, L2) from the
   transferred nets, the from-scratch nets and random nets of the same architecture, and each
   single Q of the transferred nets; add raw pixels; score each by the VOC2007 protocol (linear
   SVMs, C chosen train -> val, 11-point AP on test);
5. judge the five claims with :mod:`vggfeat.stats` (the best single Q chosen on val) and write
   ``<out>/report.md``, ``<out>/summary.json`` and ``<out>/map.png``.

Every step is seeded and deterministic on one machine; a rerun reuses the data, each trained net
whose command is unchanged and the stored descriptors (``--fresh`` redoes them). Numbers differ
between machines (floating-point order), which is why every claim carries its interval.

    python -m vggfeat.experiments.demo            # under 10 minutes on 2 CPU cores
    python -m vggfeat.experiments.demo --quick    # a one-minute smoke run, numbers meaningless
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch  # the nets are narrow: two spin-waiting threads on a busy 2-core machine are 5x slower

from ...data import voc
from ...evaluation.chance import chance_map_samples
from ...options import add_options, given, option
from .. import toy
from ..appendix_b import (
    l2,
    load_target,
    over_scales,
    per_scale_descriptors,
    pixel_features,
    random_weights,
    voc_result,
)
from .claims import System, judge, report
from .jobs import Job, run_jobs, script

log = logging.getLogger("vggfeat")


@dataclass(frozen=True)
class DemoConfig:
    """Every option of a demo run (the flags of ``python -m vggfeat.experiments.demo``); the defaults are
    ``make demo``, :data:`QUICK` the smoke test."""

    out: Path = option(Path("runs/demo"), help="run folder")
    seed: int = option(0, help="data seed: the report is on 0; the design was judged on 1 only")
    seeds: tuple[int, ...] = option((0, 1, 2), help="training seeds (also the random nets' seeds)")
    source_train: int = option(50, help="source training images per class")
    source_val: int = option(10, help="source val images per class (the source nets' error)")
    target_train: int = option(200, help="toy VOC train images")
    target_val: int = option(100, help="toy VOC val images (C and the best single Q are chosen here)")
    target_test: int = option(400, help="toy VOC test images (every reported mAP)")
    source_epochs: int = option(40, help="epochs of the source nets (cosine to lr/100)")
    scratch_epochs: int = option(12, help="epochs of the from-scratch nets (cosine to lr/100)")
    scratch_holdout: float = option(
        0.2, help="share of the target train images held out for the scratch curve"
    )
    jobs: int = option(2, help="trainings side by side (one compute thread each) and extraction threads")
    permutations: int = option(200, help="permutations of the test scores for the chance level")
    bootstrap: int = option(1000, help="bootstrap resamples of the test images per comparison")
    fresh: bool = option(False, help="redo every step (the data is reused if identical)")
    progress: bool = option(True, help="progress bars")

    def data(self) -> toy.ToyConfig:
        return toy.ToyConfig(
            seed=self.seed, source_train=self.source_train, source_val=self.source_val,
            target_train=self.target_train, target_val=self.target_val, target_test=self.target_test,
        )  # fmt: skip


QUICK = DemoConfig(
    seeds=(0,), source_train=4, source_val=2, target_train=12, target_val=12, target_test=16,
    source_epochs=1, scratch_epochs=1, permutations=20, bootstrap=50,
)  # fmt: skip


# --- the steps ---------------------------------------------------------------------------------


def train_job(cfg: DemoConfig, data: Path, name: str, seed: int, epochs: int) -> Job:
    """The trainer's ``demo`` preset on the ImageFolder ``data`` -> ``<out>/<name>/final.safetensors``."""
    out = cfg.out / name
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(script("recipes", "train_imagenet.py")), "--preset", "demo", "--data", str(data),
        "--output-dir", str(cfg.out), "--name", name, "--seed", str(seed), "--no-progress",
        "--epochs", str(epochs), "--warmup-epochs", str(min(1, epochs - 1)),  # one, if it fits
        # side by side, each trainer decodes in its own process: the toy images take under a
        # millisecond, and worker processes would take a core from the other trainer
        *(("--num-workers", "0") if cfg.jobs > 1 else ()),
    ]  # fmt: skip
    marker = (cfg.out / "data" / toy.MARKER).read_text()  # other data: train again
    return Job(cmd, out, out / "final.safetensors", inputs=marker, epochs=epochs)


def target_imagefolder(
    devkit: Path, out: Path, *, holdout: float, seed: int, repeat: int = 1
) -> tuple[Path, int]:
    """The target's ``train`` images as an ImageFolder for the from-scratch baseline: each image
    under each class it shows (label 1; multi-label images enter once per class, the usual
    reduction to single-label training); ``val/`` holds a seeded ``holdout`` share of the train
    images (the curve that shows when the net stopped improving), ``train/`` the others,
    ``repeat`` times (hard links, so that an epoch is about as long as the source's). The
    target's val and test splits are never seen. Returns (root, number of training entries)."""
    data = load_target(devkit)
    fit, held = _holdout_with_every_class(data.labels, data.splits["train"], holdout, seed)
    # an ImageFolder needs the same classes on both sides: a class too rare to split is left out
    both = ((data.labels[fit] == 1).any(0)) & ((data.labels[held] == 1).any(0))
    shutil.rmtree(out, ignore_errors=True)
    n_train = 0
    for folder, rows, copies in (("train", fit, repeat), ("val", held, 1)):
        for row in rows:
            src = Path(data.images[row])
            for k in np.flatnonzero((data.labels[row] == 1) & both):
                for j in range(copies):
                    name = src.name if copies == 1 else f"{src.stem}-{j}{src.suffix}"
                    dst = out / folder / data.classes[k] / name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, dst)
                    except OSError:  # another file system: a copy
                        shutil.copyfile(src, dst)
                    n_train += folder == "train"
    return out, n_train


def _holdout_with_every_class(
    labels: np.ndarray, rows, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held out) rows: a seeded random ``share`` of ``rows`` held out, then, for each class
    of the fit rows missing from the held-out ones, one image showing it moved over while the fit
    rows keep another."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(np.asarray(rows))
    n = max(1, int(round(share * len(rows))))
    held, fit = list(rows[:n]), list(rows[n:])
    for k in range(labels.shape[1]):
        showing = [r for r in fit if labels[r, k] == 1]
        if len(showing) > 1 and not any(labels[r, k] == 1 for r in held):
            fit.remove(showing[0])
            held.append(showing[0])
    return np.sort(fit), np.sort(held)


@contextlib.contextmanager
def _threads(n: int):

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the whole run -----------------------------------------------------------------------------


def best_single_q(systems: dict, qs: list[int]) -> int:
    """The Q whose single-scale descriptor has the best validation mAP (mean over seeds): chosen
    on val like C, never on the reported test split."""
    return max(qs, key=lambda q: np.mean(systems[f"transfer-q{q}"].val_maps()))


def _last_val_error(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(rows[-1]["val_top1_err"])


def run(cfg: DemoConfig = DemoConfig()) -> dict:
    """Every step in order; returns the summary (mAPs in percent) and the markdown."""

    cfg = replace(cfg, out=Path(cfg.out).resolve())  # subprocesses run in the repository root
    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **kw):
        t = time.time()
        out = fn(*args, **kw)
        seconds[name] = seconds.get(name, 0.0) + time.time() - t
        return out

    cfg.out.mkdir(parents=True, exist_ok=True)
    source, devkit = timed("data", toy.generate, cfg.out / "data", cfg.data(), progress=cfg.progress)
    data = load_target(devkit)
    proto = voc.protocol(data)
    n_source = cfg.source_train * len(toy.SOURCE_CLASSES)
    n_entries = int((data.labels[data.splits["train"]] == 1).sum() * (1 - cfg.scratch_holdout))
    folder, _ = target_imagefolder(
        devkit, cfg.out / "target_imagefolder", holdout=cfg.scratch_holdout, seed=cfg.seed,
        repeat=max(1, round(n_source / max(n_entries, 1))),
    )  # fmt: skip
    jobs = [train_job(cfg, source, f"source-s{s}", s, cfg.source_epochs) for s in cfg.seeds]
    jobs += [train_job(cfg, folder, f"scratch-s{s}", s, cfg.scratch_epochs) for s in cfg.seeds]
    timed("train", run_jobs, jobs, parallel=cfg.jobs, desc="train nets", cfg=cfg)
    source_err = [_last_val_error(cfg.out / f"source-s{s}") for s in cfg.seeds]

    qs = [int(q) for q in toy.TEST_Q]
    systems = {
        "transfer-multiscale": System("trained on source", "fc7, mean over Q (appendix B)", qs),
        "transfer-multiscale-l2": System("trained on source", "fc7, L2 per Q, then mean over Q", qs),
        "transfer-multiscale-3q": System("trained on source", "fc7, mean over Q (Sec. 3.2's three)", qs[:3]),
        **{f"transfer-q{q}": System("trained on source", "fc7, one Q", [q]) for q in qs},
        "scratch": System("trained on target train", "fc7, mean over Q (appendix B)", qs),
        "random": System("random (same architecture)", "fc7, mean over Q (appendix B)", qs),
    }
    for seed in cfg.seeds:
        src = cfg.out / f"source-s{seed}" / "final.safetensors"
        nets = {
            "transfer": src,
            "scratch": cfg.out / f"scratch-s{seed}" / "final.safetensors",
            "random": random_weights(src, cfg.out / f"random-s{seed}.safetensors", seed=seed),
        }
        for kind, weights in nets.items():
            with _threads(cfg.jobs):
                X, got = timed(
                    "descriptors",
                    per_scale_descriptors,
                    weights,
                    data.images,
                    cfg.out / "features",
                    cfg.progress,
                )
            assert got == qs, (got, qs)
            if kind != "transfer":
                systems[kind].add(timed("svm", voc_result, over_scales(X), data, proto))
                continue
            systems["transfer-multiscale"].add(timed("svm", voc_result, over_scales(X), data, proto))
            per_q = over_scales(X, normalize="per_scale")
            systems["transfer-multiscale-l2"].add(timed("svm", voc_result, per_q, data, proto))
            # appendix B: the five VOC scales against {256, 384, 512} (the paper: +0.3 mAP)
            systems["transfer-multiscale-3q"].add(
                timed("svm", voc_result, over_scales(X[:, :3]), data, proto)
            )
            for i, q in enumerate(qs):
                systems[f"transfer-q{q}"].add(timed("svm", voc_result, l2(X[:, i]), data, proto))
    systems["pixels"] = System("none (32x32 RGB)", "raw pixels", [])
    systems["pixels"].add(timed("pixels", voc_result, pixel_features(devkit), data, proto))
    chance = chance_map_samples(data.labels[proto.test], permutations=cfg.permutations)
    best_q = best_single_q(systems, qs)
    claims = timed("claims", judge, systems, chance, best_q, data.labels[proto.test], n=cfg.bootstrap)
    md = report(cfg, systems, chance, best_q, claims, source_err, seconds)
    return dict(summary=json.loads((cfg.out / "summary.json").read_text()), markdown=md, seconds=seconds)


# --- command line --------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers meaningless")
    add_options(p, DemoConfig)
    return p


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> DemoConfig:
    """The config the flags ask for; a bad value ends in ``parser.error`` (one line, exit 2)."""
    cfg = replace(QUICK if args.quick else DemoConfig(), **given(DemoConfig, args))
    problems = []
    if len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        problems.append(f"--seeds {' '.join(map(str, cfg.seeds))}: give distinct training seeds >= 0")
    for name in ("source_train", "source_val", "target_train", "target_val", "target_test", "source_epochs",
                 "scratch_epochs", "jobs", "permutations", "bootstrap"):  # fmt: skip
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be at least 1")
    if not 0 < cfg.scratch_holdout < 1:
        problems.append(f"--scratch-holdout {cfg.scratch_holdout}: a share between 0 and 1")
    if problems:
        (parser or get_args_parser()).error("; ".join(problems))
    return cfg


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    torch.set_num_threads(1)  # extraction takes cfg.jobs threads while nothing else runs
    parser = get_args_parser()
    cfg = config_from_args(parser.parse_args(argv), parser)
    result = run(cfg)
    print("\n" + result["markdown"])
    print(f"report: {cfg.out / 'report.md'}")
    return result


if __name__ == "__main__":
    main()
