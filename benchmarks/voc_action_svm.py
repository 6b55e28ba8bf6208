"""PASCAL VOC-2012 action classification with linear SVMs on VGG descriptors (Table 12).

    python benchmarks/voc_action_svm.py --root VOCdevkit                 # D & E, ImageNet weights
    python benchmarks/voc_action_svm.py --root VOCdevkit --model D --weights D.pth --model E --weights E.pth

Each sample is one annotated person. Two descriptors are compared: the whole image's, and the
whole image's stacked with the person box's (the box is cut out of the image and described like
an image). One-vs-rest LinearSVC per action, C chosen on 20% of train held out, trained on train,
AP by the VOC2010+ rule per action on val (the test labels are not public), mAP over the 10
actions. Writes runs/<name>/: report.md, results.json, pr_curves.png, ap_per_class.png.
``results.json`` says ``comparable: true`` only for the paper's setting (D & E at full size,
pretrained, Q = 256 ... 768 averaged, every person) and lists the reasons otherwise. Under
``accelerate launch`` every process extracts its shard and the main one writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from vggfeat.cli.common import run_script
from vggfeat.cli.svm import SVMOptions
from vggfeat.data import voc, voc_devkit
from vggfeat.evaluation import paper as published
from vggfeat.evaluation import plots, svm
from vggfeat.features.distributed import is_main_process, on_main_process
from vggfeat.options import add_options, from_args, option

PAPER_SCALES = published.VOC_Q  # the VOC setting of Appendix B
PAPER_NETS = "VGG Net-D & Net-E"  # Table 12 stacks the descriptors of D and E


@dataclass(kw_only=True)
class Config(SVMOptions):
    DEFAULT_MODELS = ("D", "E")  # Table 12 stacks the descriptors of D and E

    root: Path = option(help="VOCdevkit (or its parent, or VOC2012)")
    PAPER_SCALES: ClassVar[tuple[int, ...]] = PAPER_SCALES  # x c/224 for a net of crop c
    max_images: int | None = option(
        None, at_least=1, help="first N persons per split: quick run, not comparable"
    )

    def __post_init__(self):
        self.out = self.out or Path("runs") / f"voc2012_action_{self.label()}"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return from_args(Config, args)


def main(cfg: Config) -> dict[str, svm.VOCResult] | None:
    # the nets first: a missing weights file fails before any data is read
    nets = cfg.build_nets()
    if cfg.download:
        on_main_process(voc_devkit.download, cfg.root, 2012)
    data = voc.load_voc_actions(cfg.root, max_images=cfg.max_images)
    # Each image is described once, however many persons it holds.
    images, which = np.unique([str(p) for p in data.images], return_inverse=True)
    whole = cfg.extract(list(images), nets, folder="features_whole")[which]
    box = cfg.extract(voc.person_crops(data), nets, folder="features_box")
    if not is_main_process():
        return None
    train, val = data.splits["train"], data.splits["val"]
    select = svm.holdout(train, fraction=0.2, seed=cfg.seed)
    results = {
        name: svm.voc_classification(
            X, data.labels, select=select, fit=train, test=val, ap="voc12", grid=cfg.c_grid
        )
        for name, X in (("whole image", whole), ("whole image + person box", np.hstack([whole, box])))
    }

    notes = [
        "VOC2012 action test labels are not public: trained on train, reported on val (VOC2010+ AP); "
        "C chosen on 20% of train held out",
        "C = "
        + ", ".join(f"{r.C:g} ({n})" for n, r in results.items())
        + f" from the grid {list(cfg.c_grid)}",
        cfg.precision_note(),
    ]
    name = plots.paper_name([n.config for n in nets])
    md = plots.ap_report(
        cfg.out,
        title=f"VOC2012 action classification: linear SVMs on {name} descriptors",
        notes=notes,
        classes=data.actions,
        results=results,
        labels=data.labels[val],
        column="VOC-2012 action mAP (%)",
        paper=published.VOC_ACTION_MAP,
        paper_row="whole image + person box" if name == PAPER_NETS else "",
        not_comparable=not_comparable(cfg, nets),
        payload=dict(
            config=asdict(cfg),
            precision=cfg.ran.name,
            quick_run=cfg.max_images,
            n_persons={k: len(v) for k, v in data.splits.items()},
            dim={"whole image": whole.shape[1], "person box": box.shape[1]},
        ),
    )
    print(md)
    print(f"wrote {cfg.out}")
    return results


def not_comparable(cfg: Config, nets) -> list[str]:
    """Why this run differs from the paper's action protocol (Table 12); empty when it does not."""
    reasons = cfg.deviations(nets, rows=[PAPER_NETS], paper_scales=PAPER_SCALES, paper_aggregate="mean")
    if cfg.max_images:
        reasons.append(f"--max-images {cfg.max_images} (a quick run on part of the data)")
    return reasons


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_script(main, config_from_args(get_args_parser().parse_args()))
