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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

from vggfeat.cli.common import run_script
from vggfeat.cli.svm import SVMOptions
from vggfeat.data import caltech
from vggfeat.evaluation import paper as published
from vggfeat.evaluation import plots, svm
from vggfeat.features.distributed import is_main_process, on_main_process
from vggfeat.options import add_options, from_args, option

PAPER_SCALES = published.CALTECH_Q
PAPER_SPLITS = published.CALTECH_SPLITS


@dataclass(kw_only=True)
class Config(SVMOptions):
    root: Path = option(help="folder holding 101_ObjectCategories / 256_ObjectCategories")
    dataset: str = option("caltech101", choices=sorted(caltech.DATASETS), help="which Caltech")
    PAPER_SCALES: ClassVar[tuple[int, ...]] = PAPER_SCALES  # x c/224 for a net of crop c
    aggregate: Literal["mean", "stack", "max"] = option(
        "stack", help="Appendix B: stacking beat mean and max on Caltech"
    )
    background: bool = option(
        True, help="keep BACKGROUND_Google / 257.clutter: the paper counts 102 / 257 classes"
    )
    splits: int = option(
        PAPER_SPLITS, at_least=1, help="seeded random splits, recall reported as mean +- std over them"
    )
    train_per_class: int | None = option(None, at_least=1, help="default: the dataset's protocol (30 or 60)")
    test_per_class: int | None = option(
        None, at_least=1, help="default: the dataset's protocol (50 or the rest)"
    )
    limit_per_class: int | None = option(
        None, at_least=1, help="first N images per class: quick run, not comparable"
    )

    def __post_init__(self):  # the dataset's protocol where not given
        _, _, n_train, n_test = caltech.DATASETS[self.dataset]
        self.train_per_class = self.train_per_class or n_train
        self.test_per_class = self.test_per_class or n_test
        self.out = self.out or Path("runs") / f"{self.dataset}_{self.label()}"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return from_args(Config, args)


def main(cfg: Config) -> svm.CaltechResult | None:
    # the nets first: a missing weights file fails before any data is read
    nets = cfg.build_nets()
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
    X = cfg.extract(data.images, nets)
    if not is_main_process():
        return None
    res = svm.caltech_classification(X, data.labels, splits, grid=cfg.c_grid, seed=cfg.seed)

    n_test = "the rest" if cfg.test_per_class is None else f"up to {cfg.test_per_class}"
    notes = [
        f"{len(data.classes)} classes ({'with' if cfg.background else 'without'} background/clutter), "
        f"{cfg.splits} random splits (seed {cfg.seed}): {cfg.train_per_class} training and {n_test} "
        "test images per class; C chosen on 20% of each split's training images; metric: mean class recall",
        f"descriptor dimension {X.shape[1]} ({cfg.aggregate} over Q = {list(cfg.scales)})",
        cfg.precision_note(),
    ]
    name = plots.paper_name([n.config for n in nets])
    title = f"{cfg.dataset} classification: linear SVMs on {name} descriptors"
    md = plots.recall_report(
        cfg.out,
        title=title,
        notes=notes,
        classes=data.classes,
        result=res,
        label=f"this run, {name}",
        column=f"{cfg.dataset} mean class recall (%)",
        paper=published.CALTECH_RECALL[cfg.dataset],
        paper_row=name,
        not_comparable=not_comparable(cfg, nets),
        payload=dict(
            config=asdict(cfg),
            precision=cfg.ran.name,
            quick_run=cfg.limit_per_class,
            dim=X.shape[1],
            n_images=len(data.images),
        ),
    )
    print(md)
    print(f"wrote {cfg.out}")
    return res


def not_comparable(cfg: Config, nets) -> list[str]:
    """Why this run differs from the paper's Caltech protocol (Table 11); empty when it does not."""
    rows = [k for k in published.CALTECH_RECALL[cfg.dataset] if k.startswith("VGG")]
    reasons = cfg.deviations(nets, rows=rows, paper_scales=PAPER_SCALES, paper_aggregate="stack")
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
