"""Run outputs: resolved config, metrics.jsonl, PNG curves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .config import TrainConfig


def plot_metrics(metrics_file, png) -> None:
    """Loss, top-1/top-5 error and learning rate per epoch, from metrics.jsonl, as one PNG.

    Drawn on a ``matplotlib.figure.Figure`` (as :mod:`vggfeat.plots` does), which saves through the
    Agg canvas without pyplot: the caller's matplotlib backend and figure list stay as they were."""
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    if not rows:
        return
    epochs = [r["epoch"] + 1 for r in rows]
    panels = [("train_loss", "train loss"), ("val_top1_err", "top-1 error"), ("val_top5_err", "top-5 error")]
    fig = Figure(figsize=(16, 3.5))
    axes = fig.subplots(1, 4)
    for ax, (key, title) in zip(axes, panels + [("lr", "learning rate")]):
        ax.plot(epochs, [r[key] for r in rows], marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if key == "lr" and all(r["lr"] > 0 for r in rows):  # a frozen run's lr 0 has no log
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(png, dpi=80)


class MetricsLog:
    """metrics.jsonl: one JSON line per epoch, written by the main process only."""

    def __init__(self, path: Path, *, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, *, before_epoch: int) -> None:
        """Keep the lines of epochs before ``before_epoch`` (a resumed run rewrites the rest)."""
        if self.enabled and self.path.exists():
            keep = [r for r in self.rows() if r["epoch"] < before_epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def append(self, row: dict) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def plot(self, png) -> None:
        if self.enabled:
            plot_metrics(self.path, png)


def write_resolved_config(cfg: TrainConfig, path: Path, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**asdict(cfg), **extra}, indent=1, default=str))
