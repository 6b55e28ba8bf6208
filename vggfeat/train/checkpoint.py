"""Atomic training checkpoints (docs/architecture.md: write, fsync, mark, rename, only then prune).

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

log = logging.getLogger("vggfeat")
MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for f in files:
            _fsync(Path(dirpath) / f)
        _fsync(Path(dirpath))


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
        _fsync_tree(tmp)
        (tmp / MARKER).write_text(f"{step}\n")
        _fsync(tmp / MARKER)
        _fsync(tmp)
        if final.exists():  # an unmarked folder of the same name: never complete, replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
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
