"""Sec. 3.1 training with Accelerate: one CPU, one GPU, several GPUs or nodes, unchanged.

Multinomial logistic regression by mini-batch SGD (momentum 0.9, weight decay 5e-4, global batch
256 = per-device batch x processes x gradient accumulation), dropout 0.5 on fc6/fc7, learning
rate 1e-2 divided by 10 when the validation accuracy stops improving (3 times at most), 74
epochs; short runs anneal instead (:mod:`vggfeat.train.schedule`: step or cosine to lr/100).
Augmentation in :mod:`vggfeat.train.transforms`, data sources in :mod:`vggfeat.data.imagefolder`,
atomic checkpoints in :mod:`vggfeat.train.checkpoint`, the mean RGB in :mod:`vggfeat.train.meanrgb`,
the run-folder lock in :mod:`vggfeat.train.lock`.

Exact resume (docs/architecture.md, "Exact resume needs four things"): seedable sampler with ``set_epoch``
every epoch; ``skip_first_batches`` for the resumed epoch only; RNG states re-applied after the
resumed loader yielded its first batch; counters restored by hand from ``trainer_state.json``.
Augmentation draws are a function of (seed, epoch, sample index), and the DataLoaders own their
generators, so neither workers nor iterator creation touch the global RNG that drives dropout.
"""

from ..errors import ConfigError, RunLocked
from .config import TrainConfig, check_config
from .console import Interrupted
from .loop import Trainer, train
from .report import plot_metrics
from .schedule import Schedule, plateau_schedule
from .setup import build_model

__all__ = [
    "ConfigError",
    "Interrupted",
    "RunLocked",
    "Schedule",
    "TrainConfig",
    "Trainer",
    "build_model",
    "check_config",
    "plateau_schedule",
    "plot_metrics",
    "train",
]
