"""The plan of runs of the paper in miniature: its options, the nets in training order, the data
and the training of each net (stamped, reused, resumed)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import toy
from ..models import paper_scale
from ..options import option

log = logging.getLogger("vggfeat")
STAMP = "miniature-config.json"


@dataclass(frozen=True)
class MiniatureConfig:
    """Every option of a run (``benchmarks/paper_in_miniature.py`` derives its flags from these
    fields); the defaults are the full run, :data:`QUICK` the smoke test."""

    out: Path = option(Path("runs/miniature"), help="run folder")
    width: float = option(1 / 8, help="width factor of every net (GPUs: 0.25 ... 1)")
    fc_dim: int = option(256, help="width of fc6 and fc7")
    crop: int = option(64, help="training crop c (multiple of 32); S and Q keep the paper's ratios to c")
    seeds: tuple[int, ...] = option((0, 1), help="seeds of the cheap nets A, A-LRN, B, B-5x5")
    deep_seeds: tuple[int, ...] = option((0,), help="seeds of the C, D, E chains")
    epochs: int = option(12, help="epochs of A and A-LRN from random init (B-5x5: epochs + deep_epochs)")
    deep_epochs: int = option(8, help="epochs of B, C, D, E initialised from A")
    jitter_epochs: int = option(5, help="epochs of the fine-tuning from the fixed-S nets")
    lr: float = option(0.02, help="learning rate (fine-tuning: lr / 10, as Sec. 3.1)")
    batch_size: int = option(32, help="global batch")
    source_train: int = option(80, help="source training images per class")
    source_val: int = option(40, help="source val images per class: every verdict is measured here")
    source_holdout: int = option(10, help="images per class of the curve the trainer validates on (not val)")
    target_train: int = option(200, help="toy VOC train images")
    target_val: int = option(200, help="toy VOC val images")
    target_test: int = option(400, help="toy VOC test images")
    bootstrap: int = option(1000, help="bootstrap resamples of the val / test images")
    permutations: int = option(200, help="permutations for the chance mAP")
    num_workers: int = option(2, help="data loader workers of the trainer")
    fresh: bool = option(False, help="retrain and re-evaluate everything (the data is reused)")
    progress: bool = option(True, help="progress bars")

    def fixed_s(self) -> int:
        return paper_scale(self.crop, 256)  # Sec. 3.1: S = 256 at crop 224

    def jitter(self) -> tuple[int, int]:
        return paper_scale(self.crop, 256), paper_scale(self.crop, 512)


QUICK = MiniatureConfig(
    width=1 / 16, fc_dim=32, crop=32, seeds=(0,), epochs=1, deep_epochs=1, jitter_epochs=1,
    source_train=2, source_val=1, source_holdout=1, target_train=12, target_val=12, target_test=16,
    bootstrap=50, permutations=20, num_workers=0,
)  # fmt: skip


# --- the plan of runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """One training run: ``start`` names the net whose final weights initialise it (None:
    random init); a start of another architecture gives Sec. 3.1's layer copy, the same one
    every layer."""

    name: str
    config: str
    seed: int
    jitter: bool
    epochs: int
    lr: float
    start: str | None = None


def plan(cfg: MiniatureConfig) -> list[Net]:
    """The nets in training order: every start before the nets it initialises, and seed by seed,
    so that an interrupted run already holds every net of the first seed (``--seeds 0`` then
    reports on them)."""
    nets, ft = [], cfg.lr / 10  # Sec. 3.1: fine-tuning at 1e-3 after 1e-2
    for s in sorted(set(cfg.seeds) | set(cfg.deep_seeds)):
        a = f"A-fixed-s{s}"
        nets.append(Net(a, "A", s, False, cfg.epochs, cfg.lr))
        if s in cfg.seeds:
            nets += [
                Net(f"A-LRN-fixed-s{s}", "A-LRN", s, False, cfg.epochs, cfg.lr),
                Net(f"B-fixed-s{s}", "B", s, False, cfg.deep_epochs, cfg.lr, a),
                Net(f"B-5x5-fixed-s{s}", "B-5x5", s, False, cfg.epochs + cfg.deep_epochs, cfg.lr),
            ]
        if s in cfg.deep_seeds:
            nets += [Net(f"{c}-fixed-s{s}", c, s, False, cfg.deep_epochs, cfg.lr, a) for c in "CDE"]
            nets += [
                Net(f"{c}-jitter-s{s}", c, s, True, cfg.jitter_epochs, ft, f"{c}-fixed-s{s}") for c in "CDE"
            ]
            nets.append(Net(f"D-fixedft-s{s}", "D", s, False, cfg.jitter_epochs, ft, f"D-fixed-s{s}"))
    return nets


def kind(net_name: str) -> str:
    """The net's kind, its name without the seed: D-jitter-s0 -> D-jitter."""
    return net_name.rsplit("-s", 1)[0]


# --- data -------------------------------------------------------------------------------------------


def prepare_data(cfg: MiniatureConfig) -> tuple[Path, Path]:
    """Toy data under ``<out>/data``; ``<out>/source`` holds train/, val/ and holdout/ (the first
    ``source_holdout`` generated val images of each class) as links. Returns (source, devkit)."""
    data = toy.ToyConfig(
        source_train=cfg.source_train, source_val=cfg.source_val + cfg.source_holdout,
        target_train=cfg.target_train, target_val=cfg.target_val, target_test=cfg.target_test,
    )  # fmt: skip
    gen, devkit = toy.generate(cfg.out / "data", data, progress=cfg.progress)
    source, marker = cfg.out / "source", cfg.out / "source" / "splits.json"
    want = {"toy": json.loads((gen.parent / toy.MARKER).read_text()), "holdout": cfg.source_holdout}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return source, devkit
    shutil.rmtree(source, ignore_errors=True)
    for cls in sorted(p.name for p in (gen / "val").iterdir()):
        files = sorted((gen / "val" / cls).iterdir())
        for split, part in (("holdout", files[: cfg.source_holdout]), ("val", files[cfg.source_holdout :])):
            (source / split / cls).mkdir(parents=True)
            for f in part:
                (source / split / cls / f.name).symlink_to(f.resolve())
    (source / "train").symlink_to((gen / "train").resolve(), target_is_directory=True)
    marker.write_text(json.dumps(want))  # last: marks the links complete
    return source, devkit


# --- training ---------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_config(cfg: MiniatureConfig, net: Net, source: Path):
    """The trainer's options for ``net``: batch norm, no dropout (a narrow net trains in a few
    epochs only so), a cosine schedule to lr/100 (the plateau rule never fires in a run this
    short), with one epoch of warm-up for a net that starts from random weights; ``holdout/``
    is the curve the trainer validates on."""
    from ..train import TrainConfig

    nets = cfg.out / "nets"
    return TrainConfig(
        name=net.name, data=str(source), output_dir=str(nets), val_split="holdout",
        config=net.config, width=cfg.width, fc_dim=cfg.fc_dim, dropout=0.0, batch_norm=True,
        init_from=str(nets / net.start / "final.safetensors") if net.start else None,
        epochs=net.epochs, batch_size=cfg.batch_size, lr=net.lr, schedule="cosine",
        warmup_epochs=0 if net.start or net.epochs < 2 else 1,
        crop_size=cfg.crop, scale=None if net.jitter else cfg.fixed_s(),
        scale_jitter=cfg.jitter() if net.jitter else None, seed=net.seed,
        num_workers=cfg.num_workers, progress=cfg.progress,
    )  # fmt: skip


def train_net(cfg: MiniatureConfig, net: Net, source: Path) -> Path:
    """Train ``net`` unless its run folder already holds final weights made by the same options
    from the same start weights; a folder with matching options but no final weights (an
    interrupted run) is resumed from its newest checkpoint. Returns the final weights."""
    from ..distributed import process_state
    from ..train import train

    tc = train_config(cfg, net, source)
    run, state = tc.run_dir(), process_state()
    want = {**asdict(replace(tc, progress=True)), "start_sha256": tc.init_from and sha256(tc.init_from)}
    want = json.loads(json.dumps(want, default=str))
    same = (run / STAMP).exists() and json.loads((run / STAMP).read_text()) == want and not cfg.fresh
    if same and (run / "final.safetensors").exists():
        log.info("%s: reusing %s", net.name, run / "final.safetensors")
        return run / "final.safetensors"
    state.wait_for_everyone()  # every rank has read the stamp before the main one replaces it
    if state.is_main_process and not same:
        shutil.rmtree(run, ignore_errors=True)  # other options: start clean
        run.mkdir(parents=True)
        (run / STAMP).write_text(json.dumps(want, indent=1))
    state.wait_for_everyone()
    log.info("%s: training (%s)", net.name, "resuming" if same else "from the start")
    return train(replace(tc, resume=True))  # no checkpoint yet: starts from scratch
