"""Atomic training checkpoints (DESIGN.md: write, fsync, mark, rename, only then prune).

Layout: ``<root>/step_XXXXXXXX/`` holds ``accelerator.save_state`` output (model, optimiser,
samplers, per-process RNG states), ``trainer_state.json`` (epoch, position in the epoch, step,
schedule, config) and the completion marker ``COMPLETE``. A checkpoint is written into
``<root>/.tmp-step_XXXXXXXX`` first; a crash at any point leaves either the previous complete
checkpoints untouched or a folder without marker, which :func:`latest_checkpoint` ignores.
The root must be on storage shared by all processes (as for ``accelerator.save_state``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from ..files import fsync_path, fsync_tree

log = logging.getLogger("vggfeat")
MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def complete_checkpoints(root) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (by step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _NAME.match(p.name)) and p.is_dir() and (p / MARKER).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root) -> Path | None:
    """The newest complete checkpoint, ignoring temporary and unmarked folders."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


def read_state(checkpoint) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(accelerator, root, *, step: int, state: dict, keep: int | None = 3) -> Path:
    """Collective: every process calls it. Writes ``state`` (JSON-able) and the accelerator's
    state as ``<root>/step_<step>`` atomically, then keeps only the newest ``keep`` checkpoints."""
    root = Path(root)
    final, tmp = root / checkpoint_name(step), root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash at this very step
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))
        fsync_tree(tmp)
        (tmp / MARKER).write_text(f"{step}\n")
        fsync_path(tmp / MARKER)
        fsync_path(tmp)
        if final.exists():  # an unmarked folder of the same name: never complete, replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(root)
        _prune(root, keep)
        log.info("checkpoint %s written", final)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep: int | None) -> None:
    if not keep or keep <= 0:
        return
    for old in complete_checkpoints(root)[:-keep]:
        # Remove the marker first so a crash mid-delete leaves an ignored folder, not a broken one.
        (old / MARKER).unlink()
        shutil.rmtree(old)


def remove_incomplete(root) -> list[Path]:
    """Delete temporary and unmarked checkpoint folders (left by a crash); returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale = [
        p
        for p in root.iterdir()
        if p.is_dir() and (p.name.startswith(".tmp-") or (_NAME.match(p.name) and not (p / MARKER).exists()))
    ]
    for p in stale:
        log.warning("removing incomplete checkpoint %s", p)
        shutil.rmtree(p, ignore_errors=True)
    return stale


# Options that define a run: a resume with another value would silently train something else.
RUN_DEFINING = (
    "data", "train_split", "config", "width", "fc_dim", "dropout", "batch_norm", "init", "init_std",
    "init_from", "init_from_run", "batch_size", "per_device_batch_size", "lr", "momentum",
    "weight_decay", "schedule", "warmup_epochs", "lr_patience", "lr_drops", "crop_size", "scale",
    "scale_jitter", "flip", "lighting", "eigval", "eigvec", "mean_rgb", "seed", "sync_bn",
)  # fmt: skip


def _json(v):
    return json.loads(json.dumps(v, default=str))


def changed_options(saved: dict, now: dict) -> list[str]:
    """``--flag saved -> now`` for each run-defining option whose value differs."""
    out = []
    for k in RUN_DEFINING:
        if k in saved and _json(saved[k]) != _json(now.get(k)):
            out.append(f"--{k.replace('_', '-')} {saved[k]!r} (checkpoint) vs {now.get(k)!r} (now)")
    return out


def checkpoint_problem(ckpt: Path, num_processes: int) -> tuple[str | None, bool]:
    """(what is wrong with the files of ``ckpt``, or None; whether its RNG states are missing).
    Every file the resume reads is read: the trainer state, the model and optimiser tensors."""

    ckpt = Path(ckpt)
    try:
        state = read_state(ckpt)
        for k in ("epoch", "batch_in_epoch", "step", "scheduler", "config", "totals"):
            state[k]
    except FileNotFoundError:
        return f"{STATE_FILE} is missing", False
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{STATE_FILE} is unreadable ({type(e).__name__}: {e})", False
    models = sorted(ckpt.glob("model*.safetensors")) or sorted(ckpt.glob("pytorch_model*.bin"))
    if not models:
        return "model.safetensors is missing", False
    optimizers = sorted(ckpt.glob("optimizer*.bin"))
    if not optimizers:
        return "optimizer.bin is missing", False
    for f in models + optimizers:
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as z:
                    for k in z.keys():
                        z.get_tensor(k)
            else:
                torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # any reader's error means: this file cannot be resumed from
            first = (str(e).splitlines() or [""])[0][:120]
            return f"{f.name} is unreadable ({type(e).__name__}: {first})", False
    for i in range(num_processes):
        f = ckpt / f"random_states_{i}.pkl"
        if not f.is_file() or f.stat().st_size == 0:
            return f"{f.name} (the RNG states of process {i}) is missing or empty", True
    return None, False


def choose_checkpoint(root, num_processes: int, *, inexact: bool = False) -> Path | None:
    """The newest complete checkpoint whose files all read; a damaged one is passed over with a
    warning naming what is wrong. Missing RNG states are an error (the resume would not be
    bit-exact) unless ``inexact``. None when there is no complete checkpoint; ValueError when
    there are some and none reads."""
    done = complete_checkpoints(root)
    problems = []
    for ckpt in reversed(done):
        problem, rng = checkpoint_problem(ckpt, num_processes)
        if problem is None:
            return ckpt
        if rng:
            if inexact:
                log.warning("--resume-inexact: %s: %s; resuming without it, not bit-exact", ckpt, problem)
                return ckpt
            raise ValueError(
                f"--resume: {ckpt}: {problem}, so the run would not continue bit-exact; pass "
                "--resume-inexact to resume anyway"
            )
        log.warning("--resume: passing over checkpoint %s: %s", ckpt, problem)
        problems.append(f"{ckpt.name}: {problem}")
    if done:
        raise ValueError(f"--resume: no readable checkpoint in {root} ({'; '.join(problems)})")
    return None


def checkpoint_to_resume(root, num_processes: int, config: dict, inexact: bool = False) -> Path | None:
    """:func:`choose_checkpoint`, refused (ValueError naming both values of each option) when
    the run-defining options of ``config`` differ from the checkpoint's."""
    ckpt = choose_checkpoint(root, num_processes, inexact=inexact)
    if ckpt is not None:
        changed = changed_options(read_state(ckpt)["config"], config)
        if changed:
            raise ValueError(
                f"--resume: {ckpt} was trained with other options: {'; '.join(changed)}; resume "
                "with the same values, or start a new run (--name, or --overwrite)"
            )
    return ckpt
