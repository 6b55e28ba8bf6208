"""The training loop: epochs of SGD, validation, learning-rate schedule, checkpoints, exact resume."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..evaluation.posteriors import posteriors, topk_error
from ..weights.loader import save_weights
from .checkpoint import (
    checkpoint_to_resume,
    latest_checkpoint,
    read_state,
    remove_incomplete,
    save_checkpoint,
)
from .config import TrainConfig, check_config
from .console import console, interrupted
from .lock import hold_run_lock
from .report import MetricsLog, clear_run, write_resolved_config
from .schedule import Schedule
from .setup import (
    build_model,
    check_trainable,
    make_accelerator,
    make_loaders,
    mean_rgb,
    open_data,
    rng_state,
    set_rng_state,
)
from .training_set import TrainingSet
from .transforms import eval_transform, train_transform

log = logging.getLogger("vggfeat")


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, *, preprocess, channels_last: bool) -> torch.Tensor:
    """Cross-entropy of one batch of (N, 3, H, W) float RGB in [0, 1] (the trainer's step)."""
    x = preprocess.apply(x)  # Sec. 2.1: mean-RGB subtraction, the weights' preprocessing
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    logits = model(x)
    # A batch whose images were all unreadable still joins the gradient all-reduce.
    return F.cross_entropy(logits, y) if len(y) else logits.sum() * 0


class Trainer:
    """Holds one run's state. ``run()`` trains (resuming if asked) and writes final weights."""

    def __init__(self, cfg: TrainConfig):
        check_config(cfg)  # before any work: one-line errors for options that cannot work
        self.cfg, self.run_dir = cfg, cfg.run_dir()
        self.ckpt_root = self.run_dir / "checkpoints"
        self.acc, self.per_device = make_accelerator(cfg)
        self.lock = hold_run_lock(self.run_dir, self.acc)  # held until run() ends
        try:
            if cfg.overwrite and not cfg.resume:
                if self.acc.is_main_process:
                    clear_run(self.run_dir)
                self.acc.wait_for_everyone()
            elif not cfg.resume and latest_checkpoint(self.ckpt_root):
                raise ConfigError(
                    f"{self.run_dir} already holds checkpoints; pass --resume to continue that run, "
                    "--overwrite to start it afresh, or choose another --name"
                )
            self.resume_from = self._choose_checkpoint() if cfg.resume else None
            self._build()
        except BaseException:
            self.lock.release(remove_empty=True)  # a run refused at start leaves no empty folder
            raise

    def _choose_checkpoint(self) -> Path | None:
        """--resume: :func:`checkpoint_to_resume` for this run's options, before data is read."""
        if self.acc.is_main_process:
            remove_incomplete(self.ckpt_root)
        self.acc.wait_for_everyone()
        try:
            return checkpoint_to_resume(
                self.ckpt_root, self.acc.num_processes, vars(self.cfg), self.cfg.resume_inexact
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _build(self) -> None:
        from accelerate.utils import set_seed  # deferred: accelerate adds to start-up

        cfg = self.cfg
        train_images, self.val_images = open_data(cfg)
        self.classes = train_images.classes
        check_trainable(cfg, train_images, self.per_device, self.acc)
        self.mean = mean_rgb(cfg, train_images, self.run_dir, self.acc)
        set_seed(cfg.seed)  # before the model is built: same init on every process and run
        model = build_model(cfg, len(self.classes), self.mean)
        self.preprocess = model.preprocess
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        aug = dict(flip=cfg.flip, lighting=cfg.lighting, eigval=cfg.eigval, eigvec=cfg.eigvec)
        self.train_set = TrainingSet(
            train_images,
            train_transform(crop_size=cfg.crop_size, scale=cfg.train_scale(), **aug),
            seed=cfg.seed,
        )
        val_set = TrainingSet(
            self.val_images, eval_transform(crop_size=cfg.crop_size, scale=cfg.eval_scale())
        )
        loaders = make_loaders(cfg, self.train_set, val_set, self.per_device, self.acc.device.type == "cuda")
        self.model, self.opt, self.train_loader, self.val_loader = self.acc.prepare(model, opt, *loaders)
        # Not passed to prepare(): accelerate would step it once per process. Built on the
        # prepared loader, whose length is this process's steps per epoch.
        self.schedule = Schedule(
            self.opt,
            kind=cfg.schedule,
            lr=cfg.lr,
            epochs=cfg.epochs,
            steps_per_epoch=len(self.train_loader) // self.acc.gradient_accumulation_steps,
            warmup_epochs=cfg.warmup_epochs,
            patience=cfg.lr_patience,
            drops=cfg.lr_drops,
        )
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.totals = torch.zeros(3, dtype=torch.float64)  # loss sum, samples, skipped in this epoch
        self.rng_to_reapply = None
        self.metrics = MetricsLog(
            self.run_dir / "metrics.jsonl", enabled=self.acc.is_main_process, classes=len(self.classes)
        )

    def plain_model(self) -> torch.nn.Module:
        """The trained VGG itself: without DDP and without torch.compile's wrapper (whose
        ``_orig_mod.`` key prefix ``vgg()`` would otherwise have to strip)."""
        return self.acc.unwrap_model(self.model, keep_torch_compile=False)

    # -- setup -----------------------------------------------------------------------------
    def _resume_or_start(self) -> None:
        cfg, acc = self.cfg, self.acc
        if cfg.resume:
            ckpt = self.resume_from
            if ckpt is None:
                log.warning("--resume: no complete checkpoint in %s; starting from scratch", self.ckpt_root)
            else:
                self._load(ckpt)
        steps = len(self.train_loader) // acc.gradient_accumulation_steps
        if acc.is_main_process:
            write_resolved_config(
                cfg,
                self.run_dir / "config.json",
                num_processes=acc.num_processes,
                per_device_batch_size=self.per_device,
                gradient_accumulation_steps=acc.gradient_accumulation_steps,
                steps_per_epoch=steps,
                mean_rgb=list(self.mean),
                classes=self.classes,
                device=str(acc.device),
            )
            self.metrics.truncate(before_epoch=self.epoch)
            log.info(
                "global batch %d = per-device %d x %d processes x %d accumulation; %d steps per epoch",
                cfg.batch_size,
                self.per_device,
                acc.num_processes,
                acc.gradient_accumulation_steps,
                steps,
            )
        if cfg.report_to and acc.log_with:
            flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(cfg).items()}
            acc.init_trackers(cfg.name, config=flat)

    def _load(self, ckpt: Path) -> None:
        state = read_state(ckpt)
        if (state["num_processes"], state["per_device_batch_size"]) != (
            self.acc.num_processes,
            self.per_device,
        ):
            raise ValueError(
                f"{ckpt} was written by {state['num_processes']} processes with per-device batch "
                f"{state['per_device_batch_size']}; resume it with the same (this run: "
                f"{self.acc.num_processes} x {self.per_device}) so the epoch position stays exact"
            )
        self.acc.load_state(str(ckpt))
        self.schedule.load_state_dict(state["scheduler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        # Sums over all processes were saved; process 0 carries them on.
        if self.acc.is_main_process:
            self.totals = torch.tensor(state["totals"], dtype=torch.float64)
        self.rng_to_reapply = rng_state()
        self.metrics.note(resumed_at_step=self.step)  # marked on the curves
        log.info(
            "resumed from %s: epoch %d, batch %d, step %d", ckpt, self.epoch, self.batch_in_epoch, self.step
        )

    # -- one epoch -------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, bar) -> None:
        acc, loader = self.acc, self.train_loader
        self.train_set.set_epoch(epoch)
        loader.set_epoch(epoch)
        skip = self.batch_in_epoch
        batches = acc.skip_first_batches(loader, skip) if skip else loader  # resumed epoch only
        self.model.train()
        for k, (x, y, _, skipped) in enumerate(batches, start=skip):
            if self.rng_to_reapply is not None:
                # Creating the resumed iterator may draw from the global RNG: re-apply the saved
                # states after its first batch so dropout continues exactly (DESIGN.md).
                set_rng_state(self.rng_to_reapply)
                self.rng_to_reapply = None
            for msg in skipped:
                log.warning("skipped unreadable training image: %s", msg)
            with acc.accumulate(self.model):
                loss = batch_loss(
                    self.model, x, y, preprocess=self.preprocess, channels_last=self.cfg.channels_last
                )
                acc.backward(loss)
                self.opt.step()
                self.opt.zero_grad()
            self.totals += torch.tensor([loss.item() * len(y), len(y), len(skipped)], dtype=torch.float64)
            if not acc.sync_gradients:
                continue
            self.step += 1
            self.schedule.after_step()
            bar.update(1)
            if self.cfg.step_delay:
                time.sleep(self.cfg.step_delay)
            every = self.cfg.checkpoint_every
            if every and self.step % every == 0 and k + 1 < len(loader):
                self.epoch, self.batch_in_epoch = epoch, k + 1
                self._checkpoint()
        self.rng_to_reapply = None

    @torch.no_grad()
    def _validate(self) -> tuple[float, float, int]:
        """Top-1/top-5 error over the validation set, single centre crop at Q (Sec. 3.1 uses it
        to schedule the learning rate); the mean cross-entropy is noted as ``val_loss`` in the
        epoch's metrics. ``gather_for_metrics`` drops the padded duplicates."""
        self.model.eval()
        rows = []
        for x, y, valid, _ in self.val_loader:
            x = self.preprocess.apply(x)
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self.model(x).float()
            hit = logits.topk(min(5, len(self.classes)), dim=1).indices == y[:, None]
            loss = F.cross_entropy(logits, y.clamp(min=0), reduction="none")  # skipped slots: masked
            rows.append(
                self.acc.gather_for_metrics(torch.stack([hit[:, 0], hit.any(1), valid, loss], 1).float())
            )
        r = torch.cat(rows).cpu().double()
        ok = r[:, 2] > 0
        n = max(int(ok.sum()), 1)
        self.metrics.note(val_loss=float(r[ok, 3].sum()) / n)
        return 1 - float(r[ok, 0].sum()) / n, 1 - float(r[ok, 1].sum()) / n, int((~ok).sum())

    def _validate_dense(self) -> dict:
        """Sec. 3.2 dense evaluation (whole image at Q, flip averaged) through the evaluation
        engine. It leaves the training state as it found it: it runs on a copy of the model (the
        engine may move it, change its memory format and mode), and the global RNG states are
        restored afterwards (the engine's DataLoader draws its base seed from the global RNG,
        which would shift every later dropout mask)."""

        model = copy.deepcopy(self.plain_model())
        saved = rng_state()
        try:
            P = posteriors(
                model,
                self.val_images,
                scales=(self.cfg.eval_scale(),),
                device=self.acc.device,
                num_workers=0,
                progress=False,
            )
        finally:
            set_rng_state(saved)
        y = np.asarray(self.val_images.labels())
        ok = ~np.isnan(P).any(1)
        return dict(
            val_dense_top1_err=topk_error(P[ok], y[ok], 1),
            val_dense_top5_err=topk_error(P[ok], y[ok], min(5, P.shape[1])),
        )

    # -- checkpoints and outputs -----------------------------------------------------------
    def _checkpoint(self) -> None:
        totals = self.acc.reduce(self.totals.to(self.acc.device), reduction="sum").cpu()
        state = dict(
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            step=self.step,
            totals=totals.tolist(),
            scheduler=self.schedule.state_dict(),
            num_processes=self.acc.num_processes,
            per_device_batch_size=self.per_device,
            config=vars(self.cfg),
        )
        save_checkpoint(self.acc, self.ckpt_root, step=self.step, state=state, keep=self.cfg.keep)

    def _end_epoch(self, epoch: int, started: float) -> dict:
        top1, top5, val_skipped = self._validate()
        loss_sum, count, skipped = self.acc.reduce(self.totals.to(self.acc.device), reduction="sum").tolist()
        lr = self.opt.param_groups[0]["lr"]
        self.schedule.after_epoch(1 - top1)
        row = dict(
            epoch=epoch,
            step=self.step,
            train_loss=loss_sum / max(count, 1),
            val_top1_err=top1,
            val_top5_err=top5,
            lr=lr,
            time=time.time() - started,
            skipped_images=int(skipped),
            skipped_val_images=val_skipped,
        )
        if self.cfg.val_dense:
            row.update(self._validate_dense())
        self.metrics.append(row)
        self.acc.log({k: v for k, v in row.items() if k != "epoch"}, step=self.step)
        if self.acc.is_main_process:
            log.info("epoch %d: %s", epoch, json.dumps({k: round(v, 5) for k, v in row.items()}))
        self.totals.zero_()
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        self._checkpoint()
        return row

    def _final_weights(self, last: dict | None) -> Path:
        path = self.run_dir / "final.safetensors"
        if self.acc.is_main_process:
            model = self.plain_model()
            cfg = self.cfg
            result = (
                f", val top-1/top-5 error {last['val_top1_err']:.4f}/{last['val_top5_err']:.4f}"
                if last
                else ""
            )
            save_weights(
                model,
                path,
                class_names=self.classes,
                provenance=f"vggfeat.train run {cfg.name!r}: VGG-{cfg.config}, S={cfg.train_scale()}, "
                f"{cfg.epochs} epochs on {cfg.data}{result}",
            )
            log.info("final weights written to %s", path)
        self.acc.wait_for_everyone()
        return path

    def run(self) -> Path:
        """Train; Ctrl-C raises :class:`~vggfeat.train.console.Interrupted`, naming where the run
        stopped (logged once, by the main process) and how to resume it."""
        try:
            with console():
                return self._run()
        except KeyboardInterrupt:
            e = interrupted(
                epoch_steps=len(self.train_loader) // self.acc.gradient_accumulation_steps,
                step=self.step,
                epochs=self.cfg.epochs,
                checkpoints=self.ckpt_root,
            )
            if self.acc.is_main_process:
                log.warning("%s", e)
            raise e from None
        finally:
            self.lock.release()

    def _run(self) -> Path:

        self._resume_or_start()
        steps = len(self.train_loader) // self.acc.gradient_accumulation_steps
        bar = tqdm(
            total=steps * self.cfg.epochs,
            initial=self.step,
            disable=not (self.acc.is_main_process and self.cfg.progress),
            desc=self.cfg.name,
        )
        last = None
        for epoch in range(self.epoch, self.cfg.epochs):
            started = time.time()
            self._train_epoch(epoch, bar)
            last = self._end_epoch(epoch, started)
            bar.set_postfix(loss=f"{last['train_loss']:.3f}", top1_err=f"{last['val_top1_err']:.3f}")
        bar.close()
        self.metrics.plot(self.run_dir / "curves.png")  # each epoch drew it; a run with none left to do too
        path = self._final_weights(last)
        self.acc.end_training()
        return path


def train(cfg: TrainConfig) -> Path:
    """Train (or with ``cfg.resume`` continue) a run; returns ``<run>/final.safetensors``."""
    return Trainer(cfg).run()
