"""The configuration of a training run and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.imagefolder import DATA_LAYOUTS
from ..errors import ConfigError
from ..nets.models import PAPER_CROP, fc6_kernel, paper_scale
from ..options import check_ranges, option
from .schedule import SCHEDULES
from .transforms import IMAGENET_EIGVAL, IMAGENET_EIGVEC

MIXED_PRECISIONS = (None, "no", "bf16", "fp16", "auto")  # Accelerate's, and the policy's auto


@dataclass
class TrainConfig:
    """Every option of a training run; defaults are the paper's (Sec. 3.1) where it states one."""

    name: str = option("run", help="outputs go to <output_dir>/<name>/", show="the --preset's name, else run")
    data: str = option("", help="ImageFolder root (train/, val/), saved HF dataset folder, or hub name")
    output_dir: str = "runs"
    train_split: str = "train"
    val_split: str | None = option(None, help="default: val, validation or valid")
    val_labels: str | None = option(None, help="flat val/: LOC_val_solution.csv or the devkit's ground truth")
    val_synsets: str | None = option(None, help="the devkit's class order: its meta.mat or one wnid per line")
    # model (Table 1)
    config: str = "D"
    width: float = option(
        1.0, above=0, help="channel multiplier (fixed for a run: --resume refuses a change)"
    )
    fc_dim: int = option(4096, at_least=1, help="fc6/fc7 width (fixed for a run)")
    dropout: float = option(0.5, at_least=0, at_most=1)
    batch_norm: bool = False
    init: str = option("glorot", help="glorot | glorot-relu (gain sqrt 2 before each ReLU) | normal")
    init_std: float = option(0.01, help='for init=normal (the paper\'s "variance 1e-2" read as std 1e-2)')
    init_from: str | None = option(None, help="weights file: same config = all layers; net A = Sec. 3.1 init")
    init_from_run: str | None = option(None, help="else the final weights of this run under output_dir")
    # optimisation
    epochs: int = option(74, at_least=1, help="may change on --resume: a larger value extends the run")
    batch_size: int = option(256, at_least=1, help="global batch (fixed for a run)")
    per_device_batch_size: int | None = option(None, at_least=1, help="default batch_size / processes")
    lr: float = option(1e-2, above=0, help="fixed for a run: --resume refuses a change")
    momentum: float = option(0.9, at_least=0)
    weight_decay: float = option(5e-4, at_least=0)
    schedule: str = option("plateau", help="plateau (Sec. 3.1) | step | cosine (both anneal to lr/100)")
    warmup_epochs: int = option(0, at_least=0, help="linear warm-up from lr/10 (step and cosine schedules)")
    lr_patience: int = option(
        2, at_least=0, help="plateau: epochs without improvement before a drop (not in the paper)"
    )
    lr_drops: int = option(3, at_least=0, help="plateau: at most this many drops")
    # data (Sec. 3.1)
    crop_size: int = option(
        PAPER_CROP, help="a multiple of 32: fc6's kernel is crop/32, saved with the weights"
    )
    scale: int | None = option(
        None, help="fixed S; default 256 at crop 224, in the same ratio to other crops"
    )
    scale_jitter: tuple[int, int] | None = option(None, help="(Smin, Smax): per-image S")
    val_scale: int | None = option(
        None, help="Q for validation; default S, or (Smin + Smax) / 2 when jittering"
    )
    val_dense: bool = option(False, help="also Sec. 3.2 dense evaluation at Q: val_dense_top1_err")
    flip: bool = True
    lighting: float = option(0.1, help="std of the PCA colour shift (0: off)")
    eigval: tuple[float, ...] = IMAGENET_EIGVAL
    eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC
    mean_rgb: str = option("auto", help='auto (cached JSON) | path to JSON | "r,g,b" in [0, 1]')
    mean_rgb_images: int | None = option(None, help="compute the mean on this many images (default all)")
    num_workers: int = option(8, at_least=0)
    seed: int = 0
    # speed
    mixed_precision: str | None = option(
        None,
        help="no | bf16 | fp16 | auto (bf16 where the precision policy's auto picks it: AMX CPUs, "
        "GPUs with bf16 tensor cores; else no); None: what `accelerate config` says",
    )
    channels_last: bool = False
    compile: bool = False
    # run
    resume: bool = option(
        False,
        help="continue from the newest complete, readable checkpoint; the run-defining options "
        "(data, config, width, fc_dim, batch sizes, lr, schedule, crop, scales, seed, ...) must be "
        "those it was started with; --epochs, --keep, --checkpoint-every, --num-workers, --progress, "
        "--report-to may change",
    )
    resume_inexact: bool = option(
        False, help="resume even without the checkpoint's RNG states (not bit-exact: a warning)"
    )
    checkpoint_every: int = option(
        0, at_least=0, help="also checkpoint every N optimiser steps (0: only each epoch)"
    )
    keep: int = option(3, at_least=0, help="complete checkpoints kept (0: all)")
    report_to: str | None = option(None, help="e.g. tensorboard (only if installed)")
    progress: bool = True
    step_delay: float = option(
        0.0, at_least=0, help="seconds of sleep per step: lets tests interrupt a tiny run"
    )
    sync_bn: bool = option(
        False, help="batch-norm statistics over all processes' batches (SyncBatchNorm; GPUs only)"
    )
    overwrite: bool = option(False, help="start afresh in a run folder that holds an earlier run's outputs")

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def fixed_scale(self) -> int:
        # Sec. 3.1: S = 256 for the 224 crop; other crops keep that ratio
        return self.scale or paper_scale(self.crop_size, 256)

    def train_scale(self) -> int | tuple[int, int]:
        return tuple(self.scale_jitter) if self.scale_jitter else self.fixed_scale()

    def eval_scale(self) -> int:
        # Sec. 3.2: single-scale test of a jittered model at Q = 0.5 (Smin + Smax)
        if self.val_scale:
            return self.val_scale
        if self.scale_jitter:
            return (self.scale_jitter[0] + self.scale_jitter[1]) // 2
        return self.fixed_scale()

    def init_weights(self) -> Path | None:
        """The weights to start from: ``init_from``, else ``<output_dir>/<init_from_run>/
        final.safetensors`` resolved against this run's output folder."""
        if self.init_from:
            return Path(self.init_from)
        if self.init_from_run:
            return Path(self.output_dir) / self.init_from_run / "final.safetensors"
        return None


def check_config(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for options that would fail later (at the first forward, after
    the mean-RGB pass, or at the end of the run); cheap, before any data is read."""
    try:
        check_ranges(cfg)  # the parser's range checks, also for presets and the Python API
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not cfg.data:
        raise ConfigError(f"--data is required: {DATA_LAYOUTS}")
    if cfg.mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(
            f"--mixed-precision {cfg.mixed_precision}: choose one of "
            + ", ".join(map(str, MIXED_PRECISIONS[1:]))
        )
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule {cfg.schedule}: choose one of {', '.join(SCHEDULES)}")
    if cfg.warmup_epochs and cfg.schedule == "plateau":
        raise ConfigError(
            "--warmup-epochs needs --schedule step or cosine: the plateau rule reads the learning "
            "rate back from the optimiser and would undo the warm-up"
        )
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        raise ConfigError(
            f"--warmup-epochs {cfg.warmup_epochs}: must be at least 0 and below --epochs {cfg.epochs}"
        )
    try:
        fc6_kernel(cfg.crop_size)
    except ValueError as e:
        raise ConfigError(f"--crop-size {cfg.crop_size}: {e}") from None
    c = cfg.crop_size
    named = [("--scale", cfg.scale), ("--val-scale", cfg.val_scale)]
    if cfg.scale_jitter:
        lo, hi = cfg.scale_jitter
        if hi < lo:
            raise ConfigError(f"--scale-jitter {lo} {hi}: SMIN must not exceed SMAX")
        named.append(("--scale-jitter SMIN", lo))
    for flag, s in named:
        if s is not None and s < c:
            raise ConfigError(
                f"{flag} {s} is below --crop-size {c}: crops of {c} px are cut from the image "
                f"rescaled to that smallest side, so it must be at least {c}"
            )
    path = cfg.init_weights()
    if path is not None and not path.is_file():
        if cfg.init_from:
            raise ConfigError(f"--init-from {path}: no such weights file")
        raise ConfigError(
            f"run {cfg.name!r} starts from {path}, which does not exist: train it first with "
            f"--preset {cfg.init_from_run} --output-dir {cfg.output_dir}, or pass --init-from FILE"
        )


def split_batch(cfg: TrainConfig, num_processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) for the global batch over the processes."""
    n = num_processes
    per_device = cfg.per_device_batch_size or cfg.batch_size // n
    if per_device < 1 or cfg.batch_size % (per_device * n):
        raise ConfigError(
            f"--batch-size {cfg.batch_size} does not split over {n} processes with per-device "
            f"batch {per_device}: it must be a multiple of {n} x --per-device-batch-size "
            f"(at least {n})"
        )
    return per_device, cfg.batch_size // (per_device * n)
