"""Building the pieces of a run: model (with Sec. 3.1 initialisation), mean RGB, loaders, RNG."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..imagefolder import SkippingCollate, cached_mean_rgb
from ..models import init_from
from ..weights import vgg
from ..preprocess import Preprocess
from .config import TrainConfig

log = logging.getLogger("vggfeat")


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


def mean_rgb(cfg: TrainConfig, train_images, run: Path, accelerator) -> tuple[float, float, float]:
    """Sec. 2.1 mean RGB: given, read from JSON, or computed once on the main process and cached."""
    spec = cfg.mean_rgb
    if spec != "auto" and not Path(spec).suffix == ".json":
        values = [float(v) for v in spec.split(",")]
        if len(values) != 3:
            raise ValueError(f"--mean-rgb {spec!r}: give three comma-separated values in [0, 1]")
        return tuple(values)
    if spec != "auto":
        return tuple(json.loads(Path(spec).read_text())["mean_rgb"])
    data_json = Path(cfg.data) / "mean_rgb.json"
    path = data_json if data_json.is_file() else run / "mean_rgb.json"
    if accelerator.is_main_process:
        cached_mean_rgb(train_images, path, max_images=cfg.mean_rgb_images, num_workers=cfg.num_workers)
    accelerator.wait_for_everyone()
    return cached_mean_rgb(train_images, path)


def build_model(cfg: TrainConfig, num_classes: int, mean) -> torch.nn.Module:
    """The Table-1 net with mean-RGB preprocessing; ``init_from`` copies all layers of a net of
    the same architecture (S=384 from S=256, jitter from 384) or, from net A, the first four
    conv and the three FC layers (Sec. 3.1)."""
    model = vgg(
        cfg.config,
        num_classes=num_classes,
        width=cfg.width,
        fc_dim=cfg.fc_dim,
        dropout=cfg.dropout,
        batch_norm=cfg.batch_norm,
        init=cfg.init,
        std=cfg.init_std,
        preprocess=Preprocess.mean_rgb(mean),
    )
    if cfg.init_from:
        source = vgg(None, weights=cfg.init_from)
        if source.arch == model.arch:
            model.load_state_dict(source.state_dict())
            log.info("initialised all layers from %s", cfg.init_from)
        else:
            init_from(source, model)
            log.info("initialised first 4 conv + 3 FC layers from %s (Sec. 3.1)", cfg.init_from)
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
