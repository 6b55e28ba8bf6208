"""Run outputs: resolved config, metrics.jsonl, PNG curves."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from ..evaluation.chance import chance_errors
from .config import TrainConfig

log = logging.getLogger("vggfeat")


PANELS = (  # (title, [(metrics key, label)], chance key)
    ("loss", [("train_loss", "train"), ("val_loss", "validation")], None),
    ("top-1 error", [("val_top1_err", "validation")], "chance_top1_err"),
    ("top-5 error", [("val_top5_err", "validation")], "chance_top5_err"),
    ("learning rate", [("lr", None)], None),
)


def plot_metrics(metrics_file, png) -> None:
    """Train and validation loss, top-1/top-5 error with the chance level, and the learning rate
    per epoch, from metrics.jsonl, as one PNG; a dotted line marks each epoch a run was resumed in.

    Drawn on a ``matplotlib.figure.Figure`` (as :mod:`vggfeat.evaluation.plots` does), which saves through the
    Agg canvas without pyplot: the caller's matplotlib backend and figure list stay as they were."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    if not rows:
        return
    # numbered from 0, as metrics.jsonl, the log's "epoch N:" lines and the interrupt message are
    epochs = [r["epoch"] for r in rows]
    resumed = [r["epoch"] for r in rows if "resumed_at_step" in r]
    fig = Figure(figsize=(16, 3.5))
    for ax, (title, series, chance) in zip(fig.subplots(1, 4), PANELS):
        for key, label in series:
            if any(key in r for r in rows):
                ax.plot(epochs, [r.get(key, float("nan")) for r in rows], marker="o", label=label)
        if chance and chance in rows[-1]:
            ax.axhline(rows[-1][chance], color="grey", linestyle="--", label="chance")
        for k, e in enumerate(resumed):
            ax.axvline(e, color="tab:red", linestyle=":", label="resumed" if k == 0 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch (from 0, as in the log)")
        if title == "learning rate" and all(r["lr"] > 0 for r in rows):  # a frozen run's lr 0 has no log
            ax.set_yscale("log")
        elif ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=80)


class MetricsLog:
    """metrics.jsonl, one JSON line per epoch, and curves.png redrawn from it after each epoch (so
    an interrupted run has its curves), written by the main process only. Each row carries the
    chance levels of ``classes`` classes and the values given to :meth:`note` in its epoch."""

    def __init__(self, path: Path, *, enabled: bool = True, classes: int | None = None):
        self.path, self.enabled = Path(path), enabled
        self.png = self.path.with_name("curves.png")
        self.chance = {f"chance_{k}_err": e for k, e in chance_errors(classes).items()} if classes else {}
        self.noted: dict = {}
        self.drawn = None  # (png, rows in the file) of the last drawing

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, *, before_epoch: int) -> None:
        """Keep the lines of epochs before ``before_epoch`` (a resumed run rewrites the rest)."""
        if self.enabled and self.path.exists():
            keep = [r for r in self.rows() if r["epoch"] < before_epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def note(self, **values) -> None:
        """Values measured during the epoch by other parts of the trainer (validation loss, a
        resume), added to the epoch's row by :meth:`append`."""
        self.noted.update(values)

    def append(self, row: dict) -> None:
        """Add the noted values and the chance levels to ``row`` (so the caller's log line shows
        them too), write it, and redraw the curves."""
        row.update(self.noted)
        row.update(self.chance)
        self.noted = {}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.plot(self.png)

    def plot(self, png=None) -> None:
        """Draw ``png`` (default: curves.png beside the file), unless it shows these rows already."""
        png = Path(png or self.png)
        key = (png, len(self.rows()))
        if self.enabled and key != self.drawn:
            plot_metrics(self.path, png)
            self.drawn = key


RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "curves.png", "config.json", "final.safetensors")


def clear_run(run_dir: Path) -> None:
    """``--overwrite``: remove an earlier run's outputs from its folder (a cached mean RGB stays)."""

    for name in RUN_OUTPUTS:
        p = Path(run_dir) / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    log.warning("--overwrite: removed the earlier run's outputs from %s", run_dir)


def write_resolved_config(cfg: TrainConfig, path: Path, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**asdict(cfg), **extra}, indent=1, default=str))
