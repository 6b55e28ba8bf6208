"""The plan of runs of the paper in miniature: its options, the nets in training order, the data
and the training of each net (stamped, reused, resumed)."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...features.distributed import process_state
from ...nets.models import INITS, paper_scale
from ...options import option
from ...train import TrainConfig, train
from .. import toy

log = logging.getLogger("vggfeat")
STAMP = "miniature-config.json"  # of each net's run folder
RUN_STAMP = "miniature-run.json"  # of the output folder


KINDS = ("A", "A-LRN", "B", "B-5x5", "C", "D", "E")  # Table 1 and Sec. 4.1's shallow control of B


@dataclass(frozen=True)
class MiniatureConfig:
    """Every option of a run (``benchmarks/paper_in_miniature.py`` derives its flags from these
    fields); the defaults are the full run, :data:`QUICK` the smoke test."""

    out: Path = option(Path("runs/miniature"), help="run folder")
    width: float = option(1 / 8, help="width factor of every net (GPUs: 0.25 ... 1)")
    fc_dim: int = option(256, help="width of fc6 and fc7")
    crop: int = option(64, help="training crop c (multiple of 32); S and Q keep the paper's ratios to c")
    nets: tuple[str, ...] = option(KINDS, help=f"the nets to train, of {', '.join(KINDS)}")
    seeds: tuple[int, ...] = option(
        (0, 1, 2, 3, 4), help="seeds of A, A-LRN, B, B-5x5, B-fromA, C and D at fixed S"
    )
    deep_seeds: tuple[int, ...] = option(
        (0, 1, 2), help="seeds of E at fixed S, of the jittered C, D, E and of the transfer"
    )
    epochs: int = option(120, help="epochs of every net at fixed S, from random weights or from A")
    warmup_epochs: int = option(6, help="epochs of linear warm-up from lr/10 (then cosine to lr/100)")
    lr: float = option(0.005, help="learning rate (fine-tuning: lr / 10, as Sec. 3.1)")
    finetune_epochs: int = option(
        40, help="epochs of the fine-tuning of C, D, E: jittered, and at fixed S for as long (the control)"
    )
    batch_norm: bool = option(False, help="batch norm after every conv (the paper's nets have none)")
    init: str = option("glorot-relu", help="initialisation of every net: glorot-relu, glorot or normal")
    batch_size: int = option(16, help="global batch")
    data_seed: int = option(0, help="seed of the toy data (the design was chosen on seed 1)")
    source_train: int = option(10, help="source training images per class (few: D stays off the ceiling)")
    distractors: int = option(
        2, help="objects of other classes behind each source object (harder: D stays off the ceiling)"
    )
    source_val: int = option(40, help="source val images per class: every verdict is measured here")
    source_holdout: int = option(10, help="images per class of the curve the trainer validates on (not val)")
    target_train: int = option(200, help="toy VOC train images")
    target_val: int = option(200, help="toy VOC val images")
    target_test: int = option(400, help="toy VOC test images")
    bootstrap: int = option(1000, help="bootstrap resamples of the val / test images")
    permutations: int = option(200, help="permutations for the chance mAP")
    parallel: int = option(2, help="nets trained side by side, one thread each (one process: CPU)")
    num_workers: int = option(0, help="data loader workers of each trainer (0: decode in the trainer)")
    fresh: bool = option(False, help="retrain and re-evaluate everything (the data is reused)")
    progress: bool = option(True, help="progress bars")

    def fixed_s(self) -> int:
        return paper_scale(self.crop, 256)  # Sec. 3.1: S = 256 at crop 224

    def jitter(self) -> tuple[int, int]:
        return paper_scale(self.crop, 256), paper_scale(self.crop, 512)


QUICK = MiniatureConfig(
    width=1 / 16, fc_dim=32, crop=32, seeds=(0,), deep_seeds=(0,), epochs=2, warmup_epochs=1,
    finetune_epochs=1, source_train=2, source_val=1, source_holdout=1, target_train=12, target_val=12,
    target_test=16, bootstrap=50, permutations=20,
)  # fmt: skip
# What the results depend on: a run folder made with other values of these is refused.
RUN_OPTIONS = (
    "width", "fc_dim", "crop", "epochs", "warmup_epochs", "lr", "finetune_epochs", "batch_norm", "init",
    "batch_size", "data_seed", "source_train", "distractors", "source_val", "source_holdout", "target_train",
    "target_val", "target_test",
)  # fmt: skip


def check(cfg: MiniatureConfig) -> None:
    """Raise ``ValueError`` (one line naming the option) for options that cannot make a run."""
    for flag, seeds in (("--seeds", cfg.seeds), ("--deep-seeds", cfg.deep_seeds)):
        if not seeds:
            raise ValueError(f"{flag} is empty: give at least one seed, e.g. {flag} 0 1 2")
        if len(set(seeds)) < len(seeds) or min(seeds) < 0:
            raise ValueError(f"{flag} {' '.join(map(str, seeds))}: give distinct seeds >= 0")
    unknown = [n for n in cfg.nets if n not in KINDS]
    if unknown or not cfg.nets or len(set(cfg.nets)) < len(cfg.nets):
        raise ValueError(f"--nets {' '.join(cfg.nets)}: give distinct nets of {', '.join(KINDS)}")
    if "A" not in cfg.nets and any(c in cfg.nets for c in "CDE"):
        raise ValueError(f"--nets {' '.join(cfg.nets)}: C, D and E start from A (Sec. 3.1), so add A")
    if cfg.init not in INITS:
        raise ValueError(f"--init {cfg.init}: choose one of {', '.join(INITS)}")
    if cfg.distractors < 0:
        raise ValueError(f"--distractors {cfg.distractors}: give 0 or more objects per source image")
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        raise ValueError(f"--warmup-epochs {cfg.warmup_epochs}: must be at least 0 and below --epochs")
    check_folder(cfg)


def _run_options(cfg: MiniatureConfig) -> dict:
    return json.loads(json.dumps({k: getattr(cfg, k) for k in RUN_OPTIONS}, default=str))


def check_folder(cfg: MiniatureConfig) -> None:
    """Refuse an output folder that holds a run made with other :data:`RUN_OPTIONS` (its nets,
    posteriors and claims would mix with this run's), unless ``fresh``."""
    stamp, want = Path(cfg.out) / RUN_STAMP, _run_options(cfg)
    if not stamp.exists() or cfg.fresh:
        return
    held = json.loads(stamp.read_text())
    diff = [
        f"--{k.replace('_', '-')} {held.get(k)} there, {v} here" for k, v in want.items() if held.get(k) != v
    ]
    if diff:
        raise ValueError(
            f"--out {cfg.out} holds a run made with other options ({'; '.join(diff)}): "
            "choose another --out, or add --fresh to replace that run"
        )


def stamp_folder(cfg: MiniatureConfig) -> None:
    """Check the output folder (:func:`check_folder`), then stamp it with this run's options."""
    check_folder(cfg)
    stamp = Path(cfg.out) / RUN_STAMP
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(_run_options(cfg), indent=1))


# --- the plan of runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """One training run: ``start`` names the net whose final weights initialise it (None: random
    weights): all its layers when ``finetune`` (``finetune_epochs`` at lr/10), else Sec. 3.1's
    copy of A's first four convs and three FC layers (``epochs`` at lr, as a net from random
    weights). ``jitter`` trains at S in [Smin, Smax] instead of the fixed S."""

    name: str
    config: str
    seed: int
    jitter: bool
    start: str | None = None
    finetune: bool = False


def plan(cfg: MiniatureConfig) -> list[Net]:
    """The nets in training order, seed by seed (an interrupted run already holds every net of the
    first seeds), every start before the nets it initialises:

    - A, A-LRN, B and B-5x5 at fixed S from random weights;
    - C, D and E (E for the deep seeds only) at fixed S from A of the same seed by Sec. 3.1's
      layer copy (from random weights, one deep net in three sat at chance for half its epochs),
      and B from A as well ("B-fromA"), the 13-layer net they are compared with;
    - for the deep seeds, C, D and E fine-tuned from their fixed-S net, jittered (Sec. 3.1's
      multi-scale training) and at fixed S for as long at the same learning rate (the control:
      the two differ in the scale of the fine-tuning only).

    Every net that does not fine-tune trains for ``epochs`` on the same schedule."""
    nets = []
    for s in sorted(set(cfg.seeds) | set(cfg.deep_seeds)):
        a = f"A-fixed-s{s}"
        for c in (c for c in KINDS if c in cfg.nets):
            if s in (cfg.deep_seeds if c == "E" else cfg.seeds):
                nets.append(Net(f"{c}-fixed-s{s}", c, s, False, a if c in "CDE" else None))
            if c == "B" and s in cfg.seeds and any(d in cfg.nets for d in "CD"):
                nets.append(Net(f"B-fromA-fixed-s{s}", "B", s, False, a))
        if s in cfg.deep_seeds:
            for c in (c for c in "CDE" if c in cfg.nets):
                start = f"{c}-fixed-s{s}"
                nets += [
                    Net(f"{c}-jitter-s{s}", c, s, True, start, finetune=True),
                    Net(f"{c}-fixedft-s{s}", c, s, False, start, finetune=True),
                ]
    return nets


def kind(net_name: str) -> str:
    """The net's kind, its name without the seed: D-jitter-s0 -> D-jitter."""
    return net_name.rsplit("-s", 1)[0]


# --- data -------------------------------------------------------------------------------------------


def prepare_data(cfg: MiniatureConfig) -> tuple[Path, Path]:
    """Toy data under ``<out>/data``; ``<out>/source`` holds train/, val/ and holdout/ (the first
    ``source_holdout`` generated val images of each class) as links. Returns (source, devkit)."""
    data = toy.ToyConfig(
        seed=cfg.data_seed, source_train=cfg.source_train, source_val=cfg.source_val + cfg.source_holdout,
        source_distractors=cfg.distractors,
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
    """The trainer's options for ``net``: no dropout (a narrow net on a few hundred images trains
    in the budget only so), ``cfg``'s batch norm and initialisation, a cosine schedule to lr/100
    (the plateau rule never fires in a run this short), after ``warmup_epochs`` of warm-up for a
    net that does not fine-tune; ``holdout/`` is the curve the trainer validates on."""

    nets = cfg.out / "nets"
    return TrainConfig(
        name=net.name, data=str(source), output_dir=str(nets), val_split="holdout",
        config=net.config, width=cfg.width, fc_dim=cfg.fc_dim, dropout=0.0, batch_norm=cfg.batch_norm,
        init=cfg.init, init_from=str(nets / net.start / "final.safetensors") if net.start else None,
        epochs=cfg.finetune_epochs if net.finetune else cfg.epochs, batch_size=cfg.batch_size,
        lr=cfg.lr / 10 if net.finetune else cfg.lr, schedule="cosine",
        warmup_epochs=0 if net.finetune else cfg.warmup_epochs, crop_size=cfg.crop,
        scale=None if net.jitter else cfg.fixed_s(),
        scale_jitter=cfg.jitter() if net.jitter else None, seed=net.seed,
        num_workers=cfg.num_workers, progress=cfg.progress,
    )  # fmt: skip


def _stamp(tc) -> dict:
    """The trainer's options and the hash of the start weights: a retrained start retrains the
    nets fine-tuned from it."""
    held = {**asdict(replace(tc, progress=True)), "start_sha256": tc.init_from and sha256(tc.init_from)}
    return json.loads(json.dumps(held, default=str))


def finished(cfg: MiniatureConfig, net: Net, source: Path) -> Path | None:
    """The final weights of ``net`` if its run folder holds them, made by the same options."""
    tc = train_config(cfg, net, source)
    run = tc.run_dir()
    if cfg.fresh or not (run / STAMP).exists() or not (run / "final.safetensors").exists():
        return None
    return run / "final.safetensors" if json.loads((run / STAMP).read_text()) == _stamp(tc) else None


def train_net(cfg: MiniatureConfig, net: Net, source: Path) -> tuple[Path, float]:
    """Train ``net``; a run folder with matching options but no final weights (an interrupted
    run) is resumed from its newest checkpoint, one with other options is cleared. Returns (the
    final weights, seconds spent training)."""

    tc = train_config(cfg, net, source)
    run, state, want = tc.run_dir(), process_state(), _stamp(tc)
    same = (run / STAMP).exists() and json.loads((run / STAMP).read_text()) == want and not cfg.fresh
    state.wait_for_everyone()  # every rank has read the stamp before the main one replaces it
    if state.is_main_process and not same:
        shutil.rmtree(run, ignore_errors=True)  # other options: start clean
        run.mkdir(parents=True)
        (run / STAMP).write_text(json.dumps(want, indent=1))
    state.wait_for_everyone()
    log.info("%s: training (%s)", net.name, "resuming" if same else "from the start")
    t = time.time()
    weights = train(replace(tc, resume=same))
    return weights, time.time() - t


def _one_thread() -> None:
    # Two trainers side by side, one compute thread each, fill two cores; one trainer's two
    # OpenMP threads beside the other's were several times slower per epoch.

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def train_all(cfg: MiniatureConfig, nets: list[Net], source: Path) -> dict[str, tuple[Path, float]]:
    """``{net: (final weights, training seconds)}``. Under one process, ``cfg.parallel`` nets
    train side by side in child processes of one thread each (the nets are independent); under
    ``accelerate launch`` with several processes, one after the other, each spread over the
    ranks. A failing net stops the run after the nets in flight finish (their progress is kept)."""

    state, done = process_state(), {}
    for net in nets:
        if (weights := finished(cfg, net, source)) is not None:
            log.info("%s: reusing %s", net.name, weights)
            done[net.name] = (weights, 0.0)
    todo = [net for net in nets if net.name not in done]
    bar = tqdm(total=len(todo), desc="nets", unit="net", disable=not (cfg.progress and state.is_main_process))
    if state.num_processes > 1 or cfg.parallel <= 1 or len(todo) < 2:
        for net in todo:
            done[net.name] = train_net(cfg, net, source)
            bar.update()
        bar.close()
        return {net.name: done[net.name] for net in nets}
    quiet = replace(cfg, progress=False)  # the children's bars would interleave with this one
    ctx, running = multiprocessing.get_context("spawn"), {}
    with ProcessPoolExecutor(cfg.parallel, mp_context=ctx, initializer=_one_thread) as pool:
        try:
            while todo or running:
                # start, in plan order, every net whose start weights are made, up to the pool's size
                for net in [n for n in todo if n.start is None or n.start in done][
                    : cfg.parallel - len(running)
                ]:
                    running[pool.submit(train_net, quiet, net, source)] = net
                    todo.remove(net)
                finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished_now:
                    net = running.pop(f)
                    done[net.name] = f.result()
                    bar.set_postfix_str(f"{net.name} {done[net.name][1]:.0f} s")
                    bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    bar.close()
    return {net.name: done[net.name] for net in nets}
