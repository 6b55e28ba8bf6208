"""The configuration of a training run and the Sec. 3.1 learning-rate schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..transforms import IMAGENET_EIGVAL, IMAGENET_EIGVEC


@dataclass
class TrainConfig:
    """Every option of a training run; defaults are the paper's (Sec. 3.1) where it states one."""

    name: str = "run"  # outputs go to <output_dir>/<name>/
    data: str = ""  # ImageFolder root (train/, val/), saved HF dataset folder, or hub name
    output_dir: str = "runs"
    train_split: str = "train"
    val_split: str | None = None  # default: val, validation or valid
    # model (Table 1)
    config: str = "D"
    width: float = 1.0
    fc_dim: int = 4096
    dropout: float = 0.5
    batch_norm: bool = False
    init: str = "glorot"  # glorot | normal
    init_std: float = 0.01  # for init=normal (the paper's "variance 1e-2" read as std 1e-2)
    init_from: str | None = None  # weights file: same config = all layers; net A = Sec. 3.1 init
    # optimisation
    epochs: int = 74
    batch_size: int = 256  # global batch
    per_device_batch_size: int | None = None  # default batch_size / processes
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_patience: int = 2  # epochs without improvement before a drop (not stated in the paper)
    lr_drops: int = 3
    # data (Sec. 3.1)
    crop_size: int = 224
    scale: int = 256  # fixed S
    scale_jitter: tuple[int, int] | None = None  # (Smin, Smax): per-image S
    val_scale: int | None = None  # Q for validation; default S, or (Smin + Smax) / 2 when jittering
    val_dense: bool = False  # also Sec. 3.2 dense evaluation at Q (needs Q >= 224): val_dense_top1_err
    flip: bool = True
    lighting: float = 0.1  # std of the PCA colour shift (0: off)
    eigval: tuple[float, ...] = IMAGENET_EIGVAL
    eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC
    mean_rgb: str = "auto"  # auto (cached JSON) | path to JSON | "r,g,b" in [0, 1]
    mean_rgb_images: int | None = None  # compute the mean on this many images (default all)
    num_workers: int = 8
    seed: int = 0
    # speed
    mixed_precision: str = "no"  # no | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    # run
    resume: bool = False
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps (0: only each epoch)
    keep: int = 3
    report_to: str | None = None  # e.g. tensorboard (only if installed)
    progress: bool = True
    step_delay: float = 0.0  # seconds of sleep per step: lets tests interrupt a tiny run

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def train_scale(self) -> int | tuple[int, int]:
        return tuple(self.scale_jitter) if self.scale_jitter else self.scale

    def eval_scale(self) -> int:
        # Sec. 3.2: single-scale test of a jittered model at Q = 0.5 (Smin + Smax)
        if self.val_scale:
            return self.val_scale
        return (self.scale_jitter[0] + self.scale_jitter[1]) // 2 if self.scale_jitter else self.scale


def plateau_schedule(optimizer, *, lr: float, patience: int, drops: int = 3):
    """Sec. 3.1: divide the learning rate by 10 when validation accuracy (``step(metric)``, higher
    is better) stops improving, at most ``drops`` times: the floor ``lr * 0.1**drops`` stops
    further drops, and ``eps`` below that floor ignores the rounding left after the last one."""
    floor = lr * 0.1**drops
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.1, patience=patience, min_lr=floor, eps=floor * 1e-3
    )
