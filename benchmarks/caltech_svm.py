"""Caltech-101 / Caltech-256 with linear SVMs on VGG descriptors (Appendix B, Table 11).

    python benchmarks/caltech_svm.py --root ROOT --dataset caltech101          # D, ImageNet weights
    python benchmarks/caltech_svm.py --root ROOT --dataset caltech256 --model D --weights D.pth \\
        --model E --weights E.pth

Protocol: 3 seeded random splits (Caltech-101: 30 training and up to 50 test images per class;
Caltech-256: 60 training per class, the rest for testing), C chosen on 20% of each split's
training images, mean class recall reported as mean +- std over the splits. Descriptors stack
the scales {256, 384, 512} (the paper's choice for Caltech). Writes runs/<name>/: report.md,
results.json, recall_per_class.png. ``results.json`` says ``comparable: true`` only for that
protocol with the paper's nets (D, E or D & E, full size, pretrained) and lists the reasons
otherwise (e.g. ``--no-background``, fewer splits). Under ``accelerate launch`` every process
extracts its shard and the main one writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import vggfeat
from vggfeat import caltech, plots, svm
from vggfeat.cli import (
    add_model_args,
    build_nets,
    is_main_process,
    models_and_weights,
    on_main_process,
    run_script,
)

PAPER_SCALES = (256, 384, 512)
PAPER_SPLITS = 3


@dataclass
class Config:
    root: Path
    dataset: str = "caltech101"
    models: list[str] = field(default_factory=lambda: ["D"])
    weights: list[str | None] = field(default_factory=list)
    scales: tuple[int, ...] = PAPER_SCALES
    aggregate: str = "stack"  # Appendix B: stacking beat averaging and max-pooling on Caltech
    width: float | None = None  # None: what the weights hold
    fc_dim: int | None = None
    background: bool = True  # the paper counts 102 / 257 classes
    splits: int = PAPER_SPLITS
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

    def __post_init__(self):  # the dataset's protocol where not given
        _, _, n_train, n_test = caltech.DATASETS[self.dataset]
        self.train_per_class = self.train_per_class or n_train
        self.test_per_class = self.test_per_class or n_test


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
    return Config(
        root=args.root, dataset=args.dataset, models=models, weights=weights, scales=tuple(args.scales),
        aggregate=args.aggregate, width=args.width, fc_dim=args.fc_dim, background=args.background,
        splits=args.splits, seed=args.seed, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, limit_per_class=args.limit_per_class,
        c_grid=tuple(args.c_grid), out=args.out or Path("runs") / f"{args.dataset}_{'+'.join(models)}",
        device=args.device, batch_size=args.batch_size, download=args.download, cache=args.cache,
    )  # fmt: skip


def main(cfg: Config) -> svm.CaltechResult | None:
    # the nets first: a missing weights file fails before any data is read
    nets = build_nets(cfg.models, cfg.weights, width=cfg.width, fc_dim=cfg.fc_dim, seed=cfg.seed)
    if cfg.download:
        on_main_process(caltech.download, cfg.root, cfg.dataset)
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
    X = vggfeat.extract(
        data.images, model=nets if len(nets) > 1 else nets[0], scales=cfg.scales, aggregate=cfg.aggregate,
        cache=cfg.out / "features" if cfg.cache else None, device=cfg.device, batch_size=cfg.batch_size,
    )  # fmt: skip
    if not is_main_process():
        return None
    res = svm.caltech_classification(X, data.labels, splits, grid=cfg.c_grid, seed=cfg.seed)

    n_test = "the rest" if cfg.test_per_class is None else f"up to {cfg.test_per_class}"
    notes = [
        f"{len(data.classes)} classes ({'with' if cfg.background else 'without'} background/clutter), "
        f"{cfg.splits} random splits (seed {cfg.seed}): {cfg.train_per_class} training and {n_test} "
        "test images per class; C chosen on 20% of each split's training images; metric: mean class recall",
        f"descriptor dimension {X.shape[1]} ({cfg.aggregate} over Q = {list(cfg.scales)})",
    ]
    name = plots.paper_name([n.config for n in nets])
    title = f"{cfg.dataset} classification: linear SVMs on {name} descriptors"
    md = plots.recall_report(
        cfg.out, title=title, notes=notes, classes=data.classes, result=res, label=f"this run, {name}",
        column=f"{cfg.dataset} mean class recall (%)", paper=caltech.PAPER_TABLE11[cfg.dataset],
        paper_row=name, not_comparable=not_comparable(cfg, nets), payload=dict(
            config=asdict(cfg), quick_run=cfg.limit_per_class, dim=X.shape[1], n_images=len(data.images),
        ),
    )  # fmt: skip
    print(md)
    print(f"wrote {cfg.out}")
    return res


def not_comparable(cfg: Config, nets) -> list[str]:
    """Why this run differs from the paper's Caltech protocol (Table 11); empty when it does not."""
    rows = [k for k in caltech.PAPER_TABLE11[cfg.dataset] if k.startswith("VGG")]
    reasons = plots.deviations(
        nets, cfg.weights, rows=rows, scales=cfg.scales, paper_scales=PAPER_SCALES,
        aggregate=cfg.aggregate, paper_aggregate="stack",
    )  # fmt: skip
    if not cfg.background:
        reasons.append("--no-background (the paper counts the background/clutter class: 102 / 257 classes)")
    if cfg.splits != PAPER_SPLITS:
        reasons.append(f"--splits {cfg.splits} (the paper averages over {PAPER_SPLITS})")
    protocol = caltech.DATASETS[cfg.dataset][2:]
    if (cfg.train_per_class, cfg.test_per_class) != protocol:
        reasons.append(
            f"{cfg.train_per_class} training / {cfg.test_per_class or 'the rest'} test images per class "
            f"(the paper's: {protocol[0]} / {protocol[1] or 'the rest'})"
        )
    if cfg.limit_per_class:
        reasons.append(f"--limit-per-class {cfg.limit_per_class} (a quick run on part of the data)")
    return reasons


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_script(main, config_from_args(get_args_parser().parse_args()))
