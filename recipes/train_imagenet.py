"""Train the VGG nets of Table 1 with the paper's recipe (Sec. 3.1); see recipes/README.md.

    accelerate launch recipes/train_imagenet.py --preset D-256 --data /data/imagenet
    accelerate launch recipes/train_imagenet.py --preset D-256 --data /data/imagenet --resume
    python recipes/train_imagenet.py --preset demo --data /tmp/toy --epochs 3

``--preset NAME`` fills every option; any flag given on the command line overrides it. Runs on
whatever ``accelerate config`` says (CPU, one or several GPUs, several nodes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

from vggfeat.imagefolder import cached_mean_rgb, open_splits
from vggfeat.train import TrainConfig, train

PAPER = TrainConfig()  # the defaults are Sec. 3.1's: batch 256, lr 1e-2, momentum 0.9, wd 5e-4, 74 epochs


def _from(name: str) -> str:
    return str(Path(PAPER.output_dir) / name / "final.safetensors")


PRESETS: dict[str, TrainConfig] = {
    # Sec. 3.1: net A from random initialisation, S = 256
    "A-256": replace(PAPER, name="A-256", config="A"),
    "A-LRN-256": replace(PAPER, name="A-LRN-256", config="A-LRN"),
    # deeper nets: first four conv and the three FC layers from net A, the rest random
    **{f"{c}-256": replace(PAPER, name=f"{c}-256", config=c, init_from=_from("A-256")) for c in "BCDE"},
    # S = 384: initialised from the S = 256 net, learning rate 1e-3
    **{
        f"{c}-384": replace(PAPER, name=f"{c}-384", config=c, scale=384, lr=1e-3, init_from=_from(f"{c}-256"))
        for c in "CDE"
    },
    # scale jittering, S in [256, 512]: fine-tune all layers of the S = 384 net (lr not stated: 1e-3)
    **{
        f"{c}-jitter": replace(
            PAPER,
            name=f"{c}-jitter",
            config=c,
            scale_jitter=(256, 512),
            lr=1e-3,
            init_from=_from(f"{c}-384"),
        )
        for c in "CDE"
    },
    # a ~3-minute CPU run on a toy dataset (vggfeat's demo); not a paper setting
    "demo": replace(
        PAPER,
        name="demo",
        config="A",
        width=1 / 16,
        fc_dim=128,
        crop_size=64,
        scale_jitter=(64, 96),
        val_scale=80,
        batch_norm=True,  # a plain narrow A does not leave ln(classes) loss in a few epochs
        dropout=0.0,
        batch_size=32,
        epochs=20,
        lr=0.02,
        lr_patience=1,
        num_workers=2,
        channels_last=True,
    ),
}


def _arg_type(f):
    kind = str(f.type)
    return int if kind.startswith("int") else float if kind.startswith("float") else str


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named configuration (flags override it)")
    p.add_argument(
        "--compute-mean-rgb",
        action="store_true",
        help="only compute the training set's mean RGB, cached as DATA/mean_rgb.json (or in the run dir)",
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "scale_jitter":
            p.add_argument(flag, nargs=2, type=int, metavar=("SMIN", "SMAX"), default=None)
        elif f.name in ("eigval", "eigvec"):
            n = 3 if f.name == "eigval" else 9
            p.add_argument(flag, nargs=n, type=float, default=None, help="on [0, 1] RGB (eigvec row-major)")
        else:
            p.add_argument(flag, type=_arg_type(f), default=None, help=f"default {getattr(PAPER, f.name)!r}")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = PRESETS[args.preset] if args.preset else PAPER
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if "eigvec" in given:
        v = given["eigvec"]
        given["eigvec"] = (tuple(v[0:3]), tuple(v[3:6]), tuple(v[6:9]))
    for key in ("scale_jitter", "eigval"):
        if key in given:
            given[key] = tuple(given[key])
    cfg = replace(cfg, **given)
    if not cfg.data:
        raise SystemExit("--data is required: an ImageFolder root (train/, val/) or a Hugging Face dataset")
    return cfg


def main(args: argparse.Namespace) -> None:
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    cfg = config_from_args(args)
    if args.compute_mean_rgb:
        train_images, _ = open_splits(cfg.data, train_split=cfg.train_split, val_split=cfg.val_split)
        root = Path(cfg.data)
        target = root if root.is_dir() and os.access(root, os.W_OK) else cfg.run_dir()
        mean = cached_mean_rgb(
            train_images,
            target / "mean_rgb.json",
            max_images=cfg.mean_rgb_images,
            num_workers=cfg.num_workers,
        )
        logging.getLogger("vggfeat").info("mean RGB %s in %s", mean, target / "mean_rgb.json")
        return
    train(cfg)


if __name__ == "__main__":
    main(get_args_parser().parse_args(sys.argv[1:]))
