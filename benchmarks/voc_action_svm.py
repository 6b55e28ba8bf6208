"""PASCAL VOC-2012 action classification with linear SVMs on VGG descriptors (Table 12).

    python benchmarks/voc_action_svm.py --root VOCdevkit --model D --weights D.pth --model E --weights E.pth

Each sample is one annotated person. Two descriptors are compared: the whole image's, and the
whole image's stacked with the person box's (the box is cut out of the image and described like
an image). One-vs-rest LinearSVC per action, C chosen on 20% of train held out, trained on train,
AP by the VOC2010+ rule per action on val (the test labels are not public), mAP over the 10
actions. Writes runs/<name>/: report.md, results.json, pr_curves.png, ap_per_class.png.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import vggfeat
from vggfeat import plots, svm, voc
from vggfeat.cli import add_model_args, models_and_weights


@dataclass
class Config:
    root: Path
    models: list[str] = field(default_factory=lambda: ["D", "E"])  # Table 12 uses D & E stacked
    weights: list[str | None] = field(default_factory=list)
    scales: tuple[int, ...] = (256, 384, 512, 640, 768)  # the VOC setting of Appendix B
    aggregate: str = "mean"
    width: float = 1.0
    fc_dim: int = 4096
    c_grid: tuple[float, ...] = svm.C_GRID
    max_images: int | None = None
    out: Path | None = None
    device: str | None = None
    batch_size: int | None = None
    seed: int = 0
    download: bool = False
    cache: bool = True


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="VOCdevkit (or its parent, or VOC2012)")
    add_model_args(p, scales=Config.scales, aggregate="mean", default_models=("D", "E"))
    p.add_argument("--c-grid", type=float, nargs="+", default=list(svm.C_GRID))
    p.add_argument("--max-images", type=int, help="first N persons per split: quick run, not comparable")
    p.add_argument("--out", type=Path, help="output folder (default runs/voc2012_action_<models>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true", help="fetch VOC2012 with torchvision first (online)")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="do not cache features")
    return p


def config_from_args(args) -> Config:
    models, weights = models_and_weights(args, default=("D", "E"))
    return Config(
        root=args.root, models=models, weights=weights, scales=tuple(args.scales), aggregate=args.aggregate,
        width=args.width, fc_dim=args.fc_dim, c_grid=tuple(args.c_grid), max_images=args.max_images,
        out=args.out or Path("runs") / f"voc2012_action_{'+'.join(models)}", device=args.device,
        batch_size=args.batch_size, seed=args.seed, download=args.download, cache=args.cache,
    )  # fmt: skip


def main(cfg: Config) -> dict[str, svm.VOCResult]:
    if cfg.download:
        voc.download(cfg.root, 2012)
    data = voc.load_voc_actions(cfg.root, max_images=cfg.max_images)
    torch.manual_seed(cfg.seed)  # random-init nets (no --weights) are then reproducible, and cacheable
    nets = tuple(
        vggfeat.vgg(m, weights=w, width=cfg.width, fc_dim=cfg.fc_dim) for m, w in zip(cfg.models, cfg.weights)
    )
    opts = dict(model=nets if len(nets) > 1 else nets[0], scales=cfg.scales, aggregate=cfg.aggregate,
                device=cfg.device, batch_size=cfg.batch_size)  # fmt: skip
    cache = (lambda name: cfg.out / name) if cfg.cache else (lambda name: None)
    # Each image is described once, however many persons it holds.
    images, which = np.unique([str(p) for p in data.images], return_inverse=True)
    whole = vggfeat.extract(list(images), cache=cache("features_whole"), **opts)[which]
    box = vggfeat.extract(voc.person_crops(data), cache=cache("features_box"), **opts)
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
    ]
    if cfg.max_images:
        notes.insert(0, f"**QUICK RUN (--max-images {cfg.max_images}): not comparable with the paper.**")
    if None in cfg.weights:
        notes.insert(0, "**Random weights (no --weights): a plumbing check, not comparable with the paper.**")
    name = plots.paper_name(cfg.models)
    column = "VOC-2012 action mAP (%)" + (", QUICK RUN (not comparable)" if cfg.max_images else "")
    md = plots.ap_report(
        cfg.out, title=f"VOC2012 action classification: linear SVMs on {name} descriptors", notes=notes,
        classes=data.actions, results=results, labels=data.labels[val], column=column,
        paper=voc.PAPER_TABLE12, paper_row="whole image + person box" if cfg.models == ["D", "E"] else "",
        payload=dict(
            config=asdict(cfg), comparable=not cfg.max_images and None not in cfg.weights,
            quick_run=cfg.max_images, n_persons={k: len(v) for k, v in data.splits.items()},
            dim={"whole image": whole.shape[1], "person box": box.shape[1]},
        ),
    )  # fmt: skip
    print(md)
    print(f"wrote {cfg.out}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(config_from_args(get_args_parser().parse_args()))
