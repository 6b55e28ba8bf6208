"""``make demo``: the paper's transfer experiment (appendix B) in miniature, with baselines that
carry signal, the chance level and the spread over seeds.

1. generate the toy data (:mod:`vggfeat.toy`): a classification source set (ImageFolder) and a
   multi-label target set (VOC2007 layout) whose classes are new combinations of the source's
   parts;
2. train a narrow VGG-A on the source with the real trainer (``accelerate launch
   recipes/train_imagenet.py --preset demo``: crop 64 with the paper's geometry, fc6 a 2x2 conv
   over the 2x2 pool5 map; S jittered in [73, 146], the paper's [256, 512] at crop 64), once
   per seed;
3. train the same architecture from scratch on the target's own trainval images with the same
   recipe and the same number of SGD steps (multi-label images enter once per class present);
4. describe the target images with the appendix-B descriptor (dense fc7, global average pooling,
   flip averaging, mean over Q = 73, 110, 146 = the paper's 256, 384, 512 at crop 64, L2) from
   the transferred nets, the from-scratch nets and random nets of the same architecture; add raw
   pixels; score each by the VOC2007 protocol (linear SVMs, C chosen train -> val, 11-point AP
   on test);
5. write ``<out>/report.md``, ``<out>/summary.json`` and ``<out>/map.png`` with every row as the
   mean and std over seeds and the chance level of the test split (mAP of permuted scores).

Every step is seeded and deterministic; a rerun reuses the data, each trained net whose command
is unchanged and the stored descriptors (``--fresh`` redoes them).

    python -m vggfeat.demo            # about 10 minutes on 2 CPU cores
    python -m vggfeat.demo --quick    # a one-minute smoke run, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import toy
from .demo_report import Rows, chance_map, report

log = logging.getLogger("vggfeat")
REPO = Path(__file__).resolve().parents[1]  # recipes/ and benchmarks/ live beside the package
STAMP = "demo-step.json"
PRESET_BATCH = 32  # the trainer's demo preset; the from-scratch budget is counted in its steps


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and flags of one demo run. The defaults are ``make demo``; :data:`QUICK` is the
    smoke-test size. ``train_args`` are added to the trainer's ``demo`` preset."""

    out: Path = Path("runs/demo")
    data: toy.ToyConfig = toy.ToyConfig(
        source_train=50, source_val=10, target_train=100, target_val=100, target_test=400
    )
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds (and random-init seeds)
    train_args: tuple[str, ...] = ()
    permutations: int = 200  # for the chance level
    fresh: bool = False
    progress: bool = True


QUICK = DemoConfig(
    data=toy.ToyConfig(source_train=4, source_val=2, target_train=12, target_val=12, target_test=16),
    seeds=(0,),
    train_args=("--epochs", "1"),
    permutations=20,
)


# --- subprocesses ------------------------------------------------------------------------------


def _env() -> dict:
    # The scripts must import this very vggfeat (the checkout the demo runs from), offline.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # One compute thread beside the trainer's two decoding workers: on 2 cores, two OpenMP
    # threads that wait for each other while the workers hold a core made an epoch 8x slower.
    env.setdefault("OMP_NUM_THREADS", "1")
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


def _stamped(out: Path, key: list[str], product: Path, fresh: bool) -> bool:
    """True if ``out`` already holds ``product`` made by exactly ``key`` (command and inputs)."""
    stamp = out / STAMP
    return not fresh and product.exists() and stamp.exists() and json.loads(stamp.read_text()) == key


def _run(
    cmd: list[str],
    out: Path,
    product: Path,
    *,
    desc: str,
    cfg: DemoConfig,
    poll=None,
    unit: str = "it",
    inputs: str = "",
) -> bool:
    """Run ``cmd`` (output to ``<out>.log``) unless its product is already there, made by the same
    command from the same ``inputs`` (e.g. the data's marker); returns True if it ran.
    ``poll(bar)`` updates a progress bar while the command runs."""
    from tqdm.auto import tqdm

    key = [*cmd, inputs]
    if _stamped(out, key, product, cfg.fresh):
        log.info("%s: reusing %s", desc, product)
        return False
    shutil.rmtree(out, ignore_errors=True)  # a stale run folder would be resumed: start clean
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
    (out / STAMP).write_text(json.dumps(key))
    return True


def _poll_epochs(metrics: Path, total: int | None):
    def poll(bar):
        bar.total = total
        try:
            bar.n = len(metrics.read_text().splitlines())
        except OSError:
            return
        bar.refresh()

    return poll


# --- the steps ---------------------------------------------------------------------------------


def train(cfg: DemoConfig, data: Path, name: str, seed: int, extra: tuple[str, ...] = ()) -> Path:
    """The trainer's ``demo`` preset on the ImageFolder ``data`` -> ``<out>/<name>/final.safetensors``."""
    out = cfg.out / name
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(_script("recipes", "train_imagenet.py")), "--preset", "demo", "--data", str(data),
        "--output-dir", str(cfg.out), "--name", name, "--seed", str(seed), "--no-progress",
        *cfg.train_args, *extra,
    ]  # fmt: skip
    flags = list(cmd)
    epochs = int(flags[len(flags) - 1 - flags[::-1].index("--epochs") + 1]) if "--epochs" in flags else None
    poll = _poll_epochs(out / "metrics.jsonl", epochs)
    marker = (cfg.out / "data" / toy.MARKER).read_text()  # other data: train again
    _run(
        cmd,
        out,
        out / "final.safetensors",
        desc=f"train {name}",
        cfg=cfg,
        poll=poll,
        unit="epoch",
        inputs=marker,
    )
    return out / "final.safetensors"


def target_imagefolder(devkit: Path, out: Path, *, repeat: int = 1) -> tuple[Path, int]:
    """The target's trainval images as an ImageFolder for the from-scratch baseline: ``train/``
    holds every trainval image under each class it shows (label 1; multi-label images enter once
    per class, the usual reduction to single-label training), ``repeat`` times (hard links, so
    that an epoch is as long as the source's and per-epoch costs stay equal), ``val/`` the val
    images once (they are part of trainval: the trainer's plateau schedule reads them; the test
    split is never seen). Returns (root, number of training entries)."""
    from . import voc

    data = voc.load_voc(devkit, 2007, classes=tuple(toy.TARGET_CLASSES))
    shutil.rmtree(out, ignore_errors=True)
    n_train = 0
    for folder, split, copies in (("train", "trainval", repeat), ("val", "val", 1)):
        for row in data.splits[split]:
            src = Path(data.images[row])
            for k in np.flatnonzero(data.labels[row] == 1):
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


def random_weights(trained: Path, path: Path, *, seed: int) -> Path:
    """The trained net's architecture and preprocessing with seeded random (Glorot) weights, so
    that the comparison isolates what training learned."""
    import torch

    from .models import VGG
    from .weights import save_weights, vgg

    net = vgg(None, weights=str(trained))
    torch.manual_seed(seed)
    fresh = VGG(**net.arch, preprocess=net.preprocess)
    return save_weights(fresh, path, provenance=f"random init (seed {seed}) of {trained.name}'s architecture")


def per_scale_descriptors(
    weights: Path, images: list, stores: Path | None, progress: bool
) -> tuple[np.ndarray, list]:
    """Appendix-B descriptors before the last two steps: (N, len(Q), D) flip-averaged global
    averages of the dense fc7 map at each Q of the paper's ratios to the net's crop. Rows are
    kept in a feature store under ``stores``, one per weights (a retrained net gets its own)."""
    from .extract import extract
    from .models import paper_scales
    from .weights import fingerprint, vgg

    net = vgg(None, weights=str(weights))
    store = None if stores is None else Path(stores) / fingerprint(net)
    scales = list(paper_scales(net.crop))
    # The toy images decode in under a millisecond: decoding in this process beats worker
    # processes that take CPU from the network on 2 cores (measured 12 s vs 43 s for 600 images).
    X = extract(
        images,
        model=net,
        scales=scales,
        aggregate="stack",
        normalize=False,
        cache=store,
        progress=progress,
        num_workers=0,
    )
    return np.asarray(X).reshape(len(images), len(scales), -1), scales


def l2(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def voc_map(X: np.ndarray, data, proto) -> float:
    """The VOC2007 protocol of ``benchmarks/voc_svm.py`` on descriptors ``X`` -> test mAP in [0, 1]."""
    from . import svm

    res = svm.voc_classification(
        X, data.labels, select=proto.select, fit=proto.fit, test=proto.test, ap=proto.ap
    )
    return res.map


def pixel_baseline(devkit: Path, *, side: int = 32) -> float:
    """Raw pixels as the descriptor (``side`` x ``side`` RGB thumbnail, flattened, standardised
    on the SVM training images, L2-normalised like the VGG descriptor), through the same VOC2007
    protocol; returns the test mAP."""
    from PIL import Image
    from sklearn.preprocessing import StandardScaler

    from . import voc
    from .data import open_image

    data = voc.load_voc(devkit, 2007, classes=tuple(toy.TARGET_CLASSES))
    proto = voc.protocol(data)
    X = np.stack(
        [
            np.asarray(open_image(p).resize((side, side), Image.BILINEAR), np.float32).ravel()
            for p in data.images
        ]
    )
    return voc_map(l2(StandardScaler().fit(X[proto.fit]).transform(X)), data, proto)


# --- the whole run -----------------------------------------------------------------------------


def _steps_per_epoch(n: int) -> int:
    return math.ceil(n / PRESET_BATCH)


def _source_result(run: Path) -> tuple[int, float]:
    """(epochs trained, last validation top-1 error) from the trainer's own files."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return len(rows), float(rows[-1]["val_top1_err"])


def run(cfg: DemoConfig = DemoConfig()) -> dict:
    """Every step in order; returns the summary (mAPs in percent) and the markdown."""
    from . import voc

    cfg = replace(cfg, out=Path(cfg.out).resolve())  # subprocesses run in the repository root
    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **kw):
        t = time.time()
        out = fn(*args, **kw)
        seconds[name] = seconds.get(name, 0.0) + time.time() - t
        return out

    cfg.out.mkdir(parents=True, exist_ok=True)
    source, devkit = timed("data", toy.generate, cfg.out / "data", cfg.data, progress=cfg.progress)
    data = voc.load_voc(devkit, 2007, classes=tuple(toy.TARGET_CLASSES))
    proto = voc.protocol(data)
    n_source = cfg.data.source_train * len(toy.SOURCE_CLASSES)
    n_entries = int((data.labels[data.splits["trainval"]] == 1).sum())
    folder, n_scratch = target_imagefolder(
        devkit, cfg.out / "target_imagefolder", repeat=max(1, round(n_source / max(n_entries, 1)))
    )
    rows, source_err, qs = Rows(), [], []
    for seed in cfg.seeds:
        src = timed("train source", train, cfg, source, f"source-s{seed}", seed)
        epochs, err = _source_result(src.parent)
        source_err.append(err)
        # the same number of SGD steps as the source net, on the target's trainval images
        steps = epochs * _steps_per_epoch(n_source)
        scratch_epochs = max(1, round(steps / _steps_per_epoch(n_scratch)))
        scratch = timed(
            "train scratch", train, cfg, folder, f"scratch-s{seed}", seed, ("--epochs", str(scratch_epochs))
        )
        rand = random_weights(src, cfg.out / f"random-s{seed}.safetensors", seed=seed)
        for kind, weights, label in (
            ("transfer", src, "trained on source"),
            ("scratch", scratch, "trained on target trainval"),
            ("random", rand, "random (same architecture)"),
        ):
            X, qs = timed(
                "descriptors",
                per_scale_descriptors,
                weights,
                data.images,
                cfg.out / "features",
                cfg.progress,
            )
            rows.add(
                kind if kind != "transfer" else "transfer-multiscale",
                timed("svm", voc_map, l2(X.mean(1)), data, proto),
                label,
                "fc7, mean over Q",
                qs,
            )
            if kind == "transfer":
                for i, q in enumerate(qs):
                    rows.add(
                        f"transfer-q{q}",
                        timed("svm", voc_map, l2(X[:, i]), data, proto),
                        label,
                        "fc7, one Q",
                        [q],
                    )
    rows.add("pixels", timed("pixels", pixel_baseline, devkit), "none (32x32 RGB)", "raw pixels", [])
    chance = chance_map(data.labels[proto.test], permutations=cfg.permutations)
    order = ["transfer-multiscale", *(f"transfer-q{q}" for q in qs), "scratch", "random", "pixels"]
    rows.maps = {n: rows.maps[n] for n in order}
    md = report(cfg, rows, chance, qs, source_err, seconds)
    return dict(summary=json.loads((cfg.out / "summary.json").read_text()), markdown=md, seconds=seconds)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="run folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="data seed (training seeds are --seeds)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; quick: 0)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, numbers meaningless")
    p.add_argument("--fresh", action="store_true", help="redo every step (the data is reused if identical)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def config_from_args(args) -> DemoConfig:
    base = QUICK if args.quick else DemoConfig()
    return replace(
        base,
        out=args.out,
        data=replace(base.data, seed=args.seed),
        seeds=tuple(args.seeds) if args.seeds else base.seeds,
        fresh=args.fresh,
        progress=args.progress,
    )


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if "OMP_NUM_THREADS" not in os.environ:  # the nets are narrow: one thread is not the limit,
        import torch  # and two spin-waiting threads on a busy 2-core machine are 5x slower

        torch.set_num_threads(1)
    cfg = config_from_args(get_args_parser().parse_args(argv))
    result = run(cfg)
    print("\n" + result["markdown"])
    print(f"report: {cfg.out / 'report.md'}")
    return result


if __name__ == "__main__":
    main()
