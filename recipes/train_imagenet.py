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
from dataclasses import replace

from vggfeat import options
from vggfeat.errors import ConfigError, DataError, OutputError, RunLocked, WeightsError
from vggfeat.options import add_options
from vggfeat.train import Interrupted, TrainConfig, check_config, train

PAPER = TrainConfig()  # the defaults are Sec. 3.1's: batch 256, lr 1e-2, momentum 0.9, wd 5e-4, 74 epochs
# Presets that start from another preset's weights name that run: its final.safetensors is looked
# up under this run's --output-dir, and checked before any work.

PRESETS: dict[str, TrainConfig] = {
    # Sec. 3.1: net A from random initialisation, S = 256
    "A-256": replace(PAPER, name="A-256", config="A"),
    "A-LRN-256": replace(PAPER, name="A-LRN-256", config="A-LRN"),
    # deeper nets: first four conv and the three FC layers from net A, the rest random
    **{f"{c}-256": replace(PAPER, name=f"{c}-256", config=c, init_from_run="A-256") for c in "BCDE"},
    # S = 384: initialised from the S = 256 net, learning rate 1e-3
    **{
        f"{c}-384": replace(PAPER, name=f"{c}-384", config=c, scale=384, lr=1e-3, init_from_run=f"{c}-256")
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
            init_from_run=f"{c}-384",
        )
        for c in "CDE"
    },
    # vggfeat's demo on its toy data (not a paper setting): a narrow net A with the paper's
    # geometry at crop 64 (fc6 = 2x2 conv over the 2x2 pool5 map) and the paper's scale ratios,
    # S in [256, 512] * 64/224 = [73, 146], validated at Q = 384 * 64/224 = 110. A short run
    # anneals (cosine to lr/100): the plateau rule never fires in 40 epochs, and a net read off
    # at its initial learning rate swings by 10+ points of error from epoch to epoch.
    "demo": replace(
        PAPER,
        name="demo",
        config="A",
        width=1 / 8,
        fc_dim=256,
        crop_size=64,
        scale_jitter=(73, 146),
        val_scale=110,
        batch_norm=True,  # a plain narrow A does not leave ln(classes) loss in a few epochs
        dropout=0.0,
        batch_size=32,
        epochs=40,
        lr=0.02,
        schedule="cosine",
        warmup_epochs=1,
        num_workers=2,
    ),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="named configuration (flags override it)")
    p.add_argument(
        "--compute-mean-rgb",
        action="store_true",
        help="only compute the training set's mean RGB, cached as DATA/mean_rgb.json (or in the run dir)",
    )
    add_options(p, TrainConfig, base=PAPER)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = options.given(TrainConfig, args)
    if "init_from" in given:  # a weights file on the command line replaces the preset's start run
        given.setdefault("init_from_run", None)
    return replace(PRESETS[args.preset] if args.preset else PAPER, **given)


def compute_mean_rgb(cfg: TrainConfig) -> None:
    """--compute-mean-rgb: the cached mean, computed over all launched processes."""
    from vggfeat.features.distributed import process_state
    from vggfeat.train.setup import mean_rgb, open_data

    train_images, _ = open_data(cfg)
    mean_rgb(cfg, train_images, cfg.run_dir(), process_state())


def main(args: argparse.Namespace) -> None:
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    cfg = config_from_args(args)
    try:
        if args.compute_mean_rgb:
            cfg = replace(cfg, init_from=None, init_from_run=None)  # not needed for the mean
            check_config(cfg)
            compute_mean_rgb(cfg)
        else:
            train(cfg)
    except (ConfigError, DataError, RunLocked, OutputError, WeightsError) as e:
        raise SystemExit(f"error: {e}") from None
    except Interrupted:  # Ctrl-C: the trainer logged where it stopped, once
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(get_args_parser().parse_args(sys.argv[1:]))
