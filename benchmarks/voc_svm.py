"""PASCAL VOC-2007 / 2012 classification with linear SVMs on VGG descriptors (Appendix B, Table 11).

    python benchmarks/voc_svm.py --root VOCdevkit --year 2007               # D, ImageNet weights
    python benchmarks/voc_svm.py --root VOCdevkit --year 2007 --model D --weights D.pth \
        --model E --weights E.pth

Writes runs/<name>/: report.md, results.json, pr_curves.png, ap_per_class.png (and for VOC2012
the devkit result files for the evaluation server under results/VOC2012/Main/: comp2, "outside
data", as ImageNet-pretrained features are). ``results.json`` says ``comparable: true`` only for
the paper's protocol (Table 11: D, E or D & E at full size with pretrained weights, VOC's 20
classes, Q = 256 ... 768 averaged, every image) and lists the reasons otherwise. Under
``accelerate launch`` every process extracts its shard and the main one writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

from vggfeat.cli.common import run_script
from vggfeat.cli.svm import SVMOptions
from vggfeat.data import voc, voc_devkit
from vggfeat.evaluation import paper as published
from vggfeat.evaluation import plots, svm
from vggfeat.features.distributed import is_main_process, on_main_process
from vggfeat.options import add_options, check_ranges, from_args, option

PAPER_SCALES = published.VOC_Q  # Appendix B: VOC averages over 5 scales


@dataclass(kw_only=True)
class Config(SVMOptions):
    root: Path = option(help="VOCdevkit (or its parent, or VOC<year>)")
    year: Literal[2007, 2008, 2009, 2010, 2011, 2012] = 2007
    PAPER_SCALES: ClassVar[tuple[int, ...]] = PAPER_SCALES  # x c/224 for a net of crop c
    max_images: int | None = option(
        None, at_least=1, help="first N images per split: quick run, not comparable"
    )
    classes: tuple[str, ...] = option(
        voc_devkit.VOC_CLASSES, help="class names of a VOC-layout dataset of your own, each once"
    )

    def __post_init__(self):
        self.out = self.out or Path("runs") / f"voc{self.year}_{self.label()}"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return from_args(Config, args)


def check_config(cfg: Config) -> None:
    """The checks the parser cannot make, before any work (also for a Config built in Python)."""
    check_ranges(cfg)
    twice = sorted({c for c in cfg.classes if cfg.classes.count(c) > 1})
    if twice:
        raise ValueError(
            f"--classes {twice[0]} is given twice; give each class once (it would count twice in the mAP)"
        )


def main(cfg: Config) -> svm.VOCResult | None:
    check_config(cfg)
    # the nets first: a missing weights file fails before any data is read
    nets = cfg.build_nets()
    if cfg.download:
        on_main_process(voc_devkit.download, cfg.root, cfg.year)
    data = voc.load_voc(cfg.root, cfg.year, max_images=cfg.max_images, classes=cfg.classes)
    proto = voc.protocol(data, seed=cfg.seed)
    X = cfg.extract(data.images, nets)
    if not is_main_process():
        return None
    res = svm.voc_classification(X, data.labels, proto, grid=cfg.c_grid)
    if proto.submit is not None:  # VOC2012 test: devkit files for the evaluation server
        model = svm.MultiLabelSVC(C=res.C).fit(X[proto.submit[0]], data.labels[proto.submit[0]])
        ids = [data.ids[i] for i in proto.submit[1]]
        voc.write_results(
            cfg.out / "results" / f"VOC{cfg.year}" / "Main",
            ids,
            model.decision_function(X[proto.submit[1]]),
            comp=voc.competition(cfg.weights),
        )

    notes = [
        proto.description,
        f"C = {res.C:g} from the grid {list(cfg.c_grid)}; descriptor dimension {X.shape[1]}",
        cfg.precision_note(),
    ]
    name = plots.paper_name([n.config for n in nets])
    # the paper's rows only beside VOC's own 20 classes
    custom = cfg.classes != voc_devkit.VOC_CLASSES
    paper = {k: v[cfg.year] for k, v in published.VOC_MAP.items() if cfg.year in v and not custom}
    md = plots.ap_report(
        cfg.out,
        title=f"VOC{cfg.year} classification: linear SVMs on {name} descriptors",
        notes=notes,
        classes=data.classes,
        results={name: res},
        labels=data.labels[proto.test],
        column=f"VOC-{cfg.year} mAP (%)",
        paper=paper,
        paper_row=name,
        not_comparable=not_comparable(cfg, nets),
        payload=dict(
            config=asdict(cfg),
            precision=cfg.ran.name,
            quick_run=cfg.max_images,
            protocol=proto.description,
            n_images={k: len(v) for k, v in data.splits.items()},
            dim=X.shape[1],
        ),
    )
    print(md)
    print(f"wrote {cfg.out}")
    return res


def not_comparable(cfg: Config, nets) -> list[str]:
    """Why this run differs from the paper's VOC protocol (Table 11); empty when it does not."""
    rows = [k for k in published.VOC_MAP if k.startswith("VGG")]
    reasons = cfg.deviations(nets, rows=rows, paper_scales=PAPER_SCALES, paper_aggregate="mean")
    if cfg.year not in (2007, 2012):
        reasons.append(f"VOC{cfg.year}: the paper reports VOC2007 and VOC2012")
    if cfg.classes != voc_devkit.VOC_CLASSES:
        reasons.append(f"--classes {' '.join(cfg.classes)} (not VOC's 20 classes)")
    if cfg.max_images:
        reasons.append(f"--max-images {cfg.max_images} (a quick run on part of the data)")
    return reasons


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_script(main, config_from_args(get_args_parser().parse_args()))
