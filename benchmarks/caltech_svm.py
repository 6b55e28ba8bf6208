"""Caltech-101 / Caltech-256 with linear SVMs on VGG descriptors (Appendix B, Table 11).

    python benchmarks/caltech_svm.py --root ROOT --dataset caltech101 --model D --weights torchvision
    python benchmarks/caltech_svm.py --root ROOT --dataset caltech256 --model D --weights D.pth \\
        --model E --weights E.pth

Protocol: 3 seeded random splits (Caltech-101: 30 training and up to 50 test images per class;
Caltech-256: 60 training per class, the rest for testing), C chosen on 20% of each split's
training images, mean class recall reported as mean +- std over the splits. Descriptors stack
the scales {256, 384, 512} (the paper's choice for Caltech). Writes runs/<name>/: report.md,
results.json, recall_per_class.png.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import vggfeat
from vggfeat import caltech, plots, svm
from vggfeat.cli import add_model_args, models_and_weights


@dataclass
class Config:
    root: Path
    dataset: str = "caltech101"
    models: list[str] = field(default_factory=lambda: ["D"])
    weights: list[str | None] = field(default_factory=list)
    scales: tuple[int, ...] = (256, 384, 512)
    aggregate: str = "stack"  # Appendix B: stacking beat averaging and max-pooling on Caltech
    width: float = 1.0
    fc_dim: int = 4096
    background: bool = True  # the paper counts 102 / 257 classes
    splits: int = 3
    seed: int = 0
    train_per_class: int | None = None  # None: the dataset's protocol (30 or 60)
    test_per_class: int | None = None  # None: the dataset's protocol (50 or the rest)
    limit_per_class: int | None = None
    c_grid: tuple[float, ...] = svm.C_GRID
    out: Path | None = None
    device: str | None = None
    batch_size: int | None = None
    download: bool = False
    cache: bool = True


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="folder holding 101_/256_ObjectCategories")
    p.add_argument("--dataset", default="caltech101", choices=sorted(caltech.DATASETS))
    add_model_args(p, scales=Config.scales, aggregate="stack")
    no_bg = "drop BACKGROUND_Google / 257.clutter (as torchvision's Caltech101 does)"
    p.add_argument("--no-background", dest="background", action="store_false", help=no_bg)
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-class", type=int)
    p.add_argument("--test-per-class", type=int)
    p.add_argument("--limit-per-class", type=int, help="first N images per class: quick run, not comparable")
    p.add_argument("--c-grid", type=float, nargs="+", default=list(svm.C_GRID))
    p.add_argument("--out", type=Path, help="output folder (default runs/<dataset>_<models>)")
    p.add_argument(
        "--download", action="store_true", help="fetch the dataset with torchvision first (online)"
    )
    p.add_argument("--no-cache", dest="cache", action="store_false", help="do not cache features")
    return p


def config_from_args(args) -> Config:
    models, weights = models_and_weights(args, default=("D",))
    _, _, n_train, n_test = caltech.DATASETS[args.dataset]
    return Config(
        root=args.root, dataset=args.dataset, models=models, weights=weights, scales=tuple(args.scales),
        aggregate=args.aggregate, width=args.width, fc_dim=args.fc_dim, background=args.background,
        splits=args.splits, seed=args.seed, train_per_class=args.train_per_class or n_train,
        test_per_class=args.test_per_class or n_test, limit_per_class=args.limit_per_class,
        c_grid=tuple(args.c_grid), out=args.out or Path("runs") / f"{args.dataset}_{'+'.join(models)}",
        device=args.device, batch_size=args.batch_size, download=args.download, cache=args.cache,
    )  # fmt: skip


def main(cfg: Config) -> svm.CaltechResult:
    if cfg.download:
        caltech.download(cfg.root, cfg.dataset)
    data = caltech.load_caltech(
        cfg.root, cfg.dataset, include_background=cfg.background, limit_per_class=cfg.limit_per_class
    )
    splits = caltech.caltech_splits(
        data.labels,
        n_train=cfg.train_per_class,
        n_test=cfg.test_per_class,
        n_splits=cfg.splits,
        seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)  # random-init nets (no --weights) are then reproducible, and cacheable
    nets = tuple(
        vggfeat.vgg(m, weights=w, width=cfg.width, fc_dim=cfg.fc_dim) for m, w in zip(cfg.models, cfg.weights)
    )
    X = vggfeat.extract(
        data.images, model=nets if len(nets) > 1 else nets[0], scales=cfg.scales, aggregate=cfg.aggregate,
        cache=cfg.out / "features" if cfg.cache else None, device=cfg.device, batch_size=cfg.batch_size,
    )  # fmt: skip
    res = svm.caltech_classification(X, data.labels, splits, grid=cfg.c_grid, seed=cfg.seed)

    n_test = "the rest" if cfg.test_per_class is None else f"up to {cfg.test_per_class}"
    notes = [
        f"{len(data.classes)} classes ({'with' if cfg.background else 'without'} background/clutter), "
        f"{cfg.splits} random splits (seed {cfg.seed}): {cfg.train_per_class} training and {n_test} "
        "test images per class; C chosen on 20% of each split's training images; metric: mean class recall",
        f"descriptor dimension {X.shape[1]} ({cfg.aggregate} over Q = {list(cfg.scales)})",
    ]
    protocol = caltech.DATASETS[cfg.dataset][2:]
    comparable = (cfg.train_per_class, cfg.test_per_class) == protocol and not cfg.limit_per_class
    if not comparable:
        why = f"--limit-per-class {cfg.limit_per_class}, " if cfg.limit_per_class else ""
        why += f"{cfg.train_per_class} train / {n_test} test per class"
        notes.insert(0, f"**QUICK RUN ({why}): not comparable with the paper.**")
    if None in cfg.weights:
        notes.insert(0, "**Random weights (no --weights): a plumbing check, not comparable with the paper.**")
    name = plots.paper_name(cfg.models)
    title = f"{cfg.dataset} classification: linear SVMs on {name} descriptors"
    md = plots.recall_report(
        cfg.out, title=title, notes=notes, classes=data.classes, result=res,
        label=f"this run, {name}" + ("" if comparable else ", QUICK RUN (not comparable)"),
        column=f"{cfg.dataset} mean class recall (%)", paper=caltech.PAPER_TABLE11[cfg.dataset],
        paper_row=name, payload=dict(
            config=asdict(cfg), comparable=comparable and None not in cfg.weights,
            quick_run=cfg.limit_per_class, dim=X.shape[1], n_images=len(data.images),
        ),
    )  # fmt: skip
    print(md)
    print(f"wrote {cfg.out}")
    return res


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(config_from_args(get_args_parser().parse_args()))
