"""Learning-rate schedules: Sec. 3.1's plateau rule and two annealing schedules for short runs.

- ``plateau`` (the paper, and the ImageNet recipe's default): divide by 10 when the validation
  accuracy stops improving, at most ``drops`` times. It needs many epochs to fire: in a run of
  a dozen epochs it never does, and the net is read off at its initial, high learning rate,
  mid-descent, where its error swings by many points from epoch to epoch.
- ``step``: divide by 10 at 1/2 and at 3/4 of the run, so the last quarter trains at lr/100.
- ``cosine``: half a cosine from lr down to lr/100 at the last step (per optimiser step, so a
  short run anneals smoothly).

Both annealing schedules are functions of the optimiser step alone, so they need nothing from
validation and a resumed run continues them exactly. ``warmup_epochs`` ramps the learning rate
linearly from lr/10 to lr over the first epochs (steps), where a fresh deep net's large early
gradients would otherwise blow up.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("plateau", "step", "cosine")
FLOOR = 0.01  # the annealing schedules end at lr * FLOOR (lr/100)
WARMUP_START = 0.1  # warm-up starts at lr * WARMUP_START


def plateau_schedule(optimizer, *, lr: float, patience: int, drops: int = 3):
    """Sec. 3.1: divide the learning rate by 10 when validation accuracy (``step(metric)``, higher
    is better) stops improving, at most ``drops`` times: the floor ``lr * 0.1**drops`` stops
    further drops, and ``eps`` below that floor ignores the rounding left after the last one."""
    floor = lr * 0.1**drops
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.1, patience=patience, min_lr=floor, eps=floor * 1e-3
    )


def lr_factor(step: int, *, kind: str, total: int, warmup: int = 0) -> float:
    """The multiplier of the base learning rate at optimiser step ``step`` (0-based) of a run of
    ``total`` steps, the first ``warmup`` of them a linear warm-up."""
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    t = min(step - warmup, total - warmup - 1) / max(total - warmup - 1, 1)  # 0 -> 1 over the run
    if kind == "cosine":
        return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * t))
    if kind == "step":
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else FLOOR
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


class Schedule:
    """One interface over the three: ``after_step()`` after each optimiser step,
    ``after_epoch(val_accuracy)`` after each validation, ``state_dict``/``load_state_dict`` for
    checkpoints."""

    def __init__(self, optimizer, *, kind: str, lr: float, epochs: int, steps_per_epoch: int,
                 warmup_epochs: int = 0, patience: int = 2, drops: int = 3):  # fmt: skip
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")
        self.kind = kind
        if kind == "plateau":
            self.impl = plateau_schedule(optimizer, lr=lr, patience=patience, drops=drops)
        else:
            total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
            self.impl = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_factor(s, kind=kind, total=total, warmup=warmup)
            )

    def after_step(self) -> None:
        if self.kind != "plateau":
            self.impl.step()

    def after_epoch(self, val_accuracy: float) -> None:
        if self.kind == "plateau":
            self.impl.step(val_accuracy)  # Sec. 3.1: drop on validation accuracy

    def state_dict(self) -> dict:
        return self.impl.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.impl.load_state_dict(state)
