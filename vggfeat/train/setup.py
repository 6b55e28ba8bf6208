"""Building the pieces of a run: accelerator, model (Sec. 3.1 initialisation), mean RGB, loaders,
RNG states."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..data.imagefolder import open_splits
from ..errors import ConfigError
from ..features.precision import resolve
from ..nets.models import init_from
from ..nets.preprocess import Preprocess
from ..weights.loader import vgg
from .config import TrainConfig, split_batch
from .meanrgb import shared_mean_rgb
from .training_set import SkippingCollate

log = logging.getLogger("vggfeat")


def make_accelerator(cfg: TrainConfig):
    """One Accelerator per run; the global batch is split as per-device x processes x
    accumulation. ``mixed_precision=None`` leaves the choice to ``accelerate config`` and
    ``ACCELERATE_MIXED_PRECISION``."""
    from accelerate import Accelerator  # deferred: accelerate adds to start-up
    from accelerate.utils import (  # deferred: accelerate adds to start-up
        DataLoaderConfiguration,
        ProjectConfiguration,
        is_tensorboard_available,
    )

    trackers = cfg.report_to
    if trackers == "tensorboard" and not is_tensorboard_available():
        log.warning("--report-to tensorboard ignored: tensorboard is not installed")
        trackers = None
    acc = Accelerator(
        mixed_precision=mixed_precision(cfg.mixed_precision),
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(cfg.run_dir()), automatic_checkpoint_naming=False
        ),
        # docs/architecture.md: a seedable sampler, so that a resumed epoch has the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    per_device, acc.gradient_accumulation_steps = split_batch(cfg, acc.num_processes)
    check_sync_bn(cfg, acc.device)
    return acc, per_device


def mixed_precision(asked: str | None) -> str | None:
    """Accelerate's ``mixed_precision`` for ``--mixed-precision``: "auto" is bf16 where the
    precision policy (:mod:`vggfeat.features.precision`) picks bf16 on this process's device,
    else "no"; any other value is Accelerate's own."""
    if asked != "auto":
        return asked
    from accelerate import PartialState  # deferred: accelerate adds to start-up

    r = resolve("auto", PartialState().device)
    log.info("--mixed-precision auto: %s (%s)", r.name, r.reason)
    return "bf16" if r.name == "bf16" else "no"


SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")  # where torch's SyncBatchNorm runs (it refuses CPU tensors)


def check_sync_bn(cfg: TrainConfig, device: torch.device) -> None:
    """``--sync-bn`` needs batch norm and a device torch's SyncBatchNorm supports: without it each
    process normalises over its own per-device batch, so 2 processes x b differ from 1 x 2b."""
    if not cfg.sync_bn:
        return
    if not cfg.batch_norm:
        raise ConfigError("--sync-bn synchronises batch norm: add --batch-norm, or drop --sync-bn")
    if device.type not in SYNC_BN_DEVICES:
        raise ConfigError(
            f"--sync-bn: torch's SyncBatchNorm runs on {'/'.join(SYNC_BN_DEVICES)} devices, not on "
            f"{device.type}; drop --sync-bn (each process then normalises over its own batch)"
        )


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def open_data(cfg: TrainConfig):
    """(train, val) :class:`~vggfeat.data.imagefolder.LabelledImages` of the run's ``--data``."""
    return open_splits(
        cfg.data,
        train_split=cfg.train_split,
        val_split=cfg.val_split,
        val_labels=cfg.val_labels,
        val_synsets=cfg.val_synsets,
    )


def check_trainable(cfg: TrainConfig, train_images, per_device: int, acc) -> None:
    """Refuse a training set that cannot train: one class (the loss is 0 from the start), or
    fewer images than one optimiser step takes (per-device batch x processes x accumulation;
    the last incomplete batch is dropped, so no step would run)."""
    classes = train_images.classes
    per_step = per_device * acc.num_processes * acc.gradient_accumulation_steps
    if len(classes) < 2:
        raise ConfigError(
            f"--data {cfg.data}: the training split has one class ({classes[0]!r}); a "
            "classifier needs at least 2 (its loss would be 0 from the start)"
        )
    if len(train_images) // per_step == 0:
        raise ConfigError(
            f"--data {cfg.data}: {len(train_images)} training images are fewer than one batch "
            f"(--batch-size {cfg.batch_size}; the last incomplete batch is dropped), so nothing "
            f"would be trained: give --batch-size {max(1, len(train_images))} or less"
        )


def mean_rgb(cfg: TrainConfig, train_images, run: Path, state) -> tuple[float, float, float]:
    """Sec. 2.1 mean RGB: given as "r,g,b", read from a JSON file, or (``auto``) the cached one,
    computed over all processes of ``state`` on first use (:mod:`vggfeat.train.meanrgb`)."""
    spec = cfg.mean_rgb
    if spec == "auto":
        return shared_mean_rgb(
            train_images,
            data=cfg.data,
            run_dir=run,
            state=state,
            max_images=cfg.mean_rgb_images,
            num_workers=cfg.num_workers,
        )
    if Path(spec).suffix == ".json":
        return tuple(json.loads(Path(spec).read_text())["mean_rgb"])
    values = [float(v) for v in spec.split(",")]
    if len(values) != 3:
        raise ConfigError(f"--mean-rgb {spec!r}: give three comma-separated values in [0, 1]")
    return tuple(values)


def build_model(cfg: TrainConfig, num_classes: int, mean) -> torch.nn.Module:
    """The Table-1 net for crop ``cfg.crop_size`` (fc6's kernel is crop/32, and the saved weights
    carry the crop) with mean-RGB preprocessing; the start weights (``cfg.init_weights()``) give
    all layers of a net of the same architecture (S=384 from S=256, jitter from 384) or, from
    net A, the first four conv and the three FC layers (Sec. 3.1)."""
    model = vgg(
        cfg.config,
        num_classes=num_classes,
        width=cfg.width,
        fc_dim=cfg.fc_dim,
        dropout=cfg.dropout,
        batch_norm=cfg.batch_norm,
        init=cfg.init,
        std=cfg.init_std,
        crop=cfg.crop_size,
        preprocess=Preprocess.mean_rgb(mean),
    )
    if cfg.sync_bn:  # same parameters and state-dict keys: the saved weights are plain batch norm
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    start = cfg.init_weights()
    if start is not None:
        source = vgg(None, weights=str(start))  # a compiled model's "_orig_mod." keys load too
        if source.arch == model.arch:
            model.load_state_dict(source.state_dict())
            log.info("initialised all layers from %s", start)
        else:
            init_from(source, model)
            log.info("initialised first 4 conv + 3 FC layers from %s (Sec. 3.1)", start)
    return model


def make_loaders(cfg: TrainConfig, train_set, val_set, per_device: int, pin: bool):
    shape = (3, cfg.crop_size, cfg.crop_size)
    common = dict(
        batch_size=per_device,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=pin,
    )
    train = DataLoader(
        train_set,
        sampler=RandomSampler(train_set),  # becomes accelerate's SeedableRandomSampler
        drop_last=True,  # fixed-size batches: 1 x 2b and 2 x b see the same samples per step
        collate_fn=SkippingCollate(shape),
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG out of it
        **common,
    )
    val = DataLoader(
        val_set,
        shuffle=False,
        collate_fn=SkippingCollate(shape, keep_slots=True),
        generator=torch.Generator().manual_seed(cfg.seed),
        **common,
    )
    return train, val
