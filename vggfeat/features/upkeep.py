"""Feature-store upkeep: :func:`compact` merges a store's chunks, safe against writers and
against another compact.

A compact registers in the store's ``writers/`` folder as ``compact.json``, created exclusively
(a hard link of a complete file: atomic also on NFS), so that a second compact of the same store
is refused while the first runs (:class:`StoreBusy` naming it), and refuses itself while an
extraction writes there. A compact killed midway leaves its file behind; its pid, dead on this
host, lets the next compact take over. Chunks that cannot be read (damaged, or stamped with
another protocol) are moved to ``quarantine/`` in the store, out of every reader's way.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from pathlib import Path

import numpy as np

from ..errors import OutputError, StoreBusy
from ..files import NOT_WRITABLE, pid_alive
from .store import FeatureStore, log, stores

__all__ = ["COMPACT_ROWS", "compact"]

COMPACT_ROWS = 65536  # rows per merged chunk: 1 GiB of fc7 rows at most in memory
COMPACTING = "compact.json"


def _holder(f: Path) -> dict | None:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def _alive(who: dict) -> bool:
    return who.get("host") != socket.gethostname() or pid_alive(int(who.get("pid", -1)))


def _live_writers(store: FeatureStore, me: Path | None = None) -> list[str]:
    """The writers (and compacts) of ``store`` that may be running, except ``me``; the file of a
    dead process on this host is removed."""
    live = []
    folder = store.root / "writers"
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if f == me:
            continue
        who = _holder(f)
        if who is None:
            continue  # being written or removed now: the writer is starting or done
        if not _alive(who):  # killed: its chunks are complete or invisible
            with contextlib.suppress(OSError):
                f.unlink()
            continue
        what = "compact" if f.name == COMPACTING else "writer"
        live.append(f"{what} {f} (host {who.get('host')}, pid {who.get('pid')})")
    return live


def _read_only(store: FeatureStore, e: OSError) -> OutputError:
    return OutputError(
        f"feature store {store.root} cannot be compacted: it is not writable ({os.strerror(e.errno)}); "
        "run compact where the store can be written"
    )


def _register(store: FeatureStore) -> Path:
    """Take the store's compact slot (module docstring); :class:`StoreBusy` if another holds it."""
    folder = store.root / "writers"
    path = folder / COMPACTING
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "compact": True})
    try:
        folder.mkdir(exist_ok=True)
        for _ in range(5):
            tmp = folder / f".compact-{uuid.uuid4().hex}.tmp"
            tmp.write_text(me)
            try:
                try:
                    os.link(tmp, path)  # exclusive, and complete once visible
                except FileExistsError:
                    raise
                except OSError:  # no hard links on this mount
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    with os.fdopen(fd, "w") as f:
                        f.write(me)
                return path
            except FileExistsError:
                seen = path.read_text() if path.exists() else ""
                who = _holder(path)
                if who is not None and _alive(who):
                    raise StoreBusy(
                        f"feature store {store.root} is being compacted by host {who.get('host')}, "
                        f"pid {who.get('pid')}; wait for it to end (delete {path} if that process "
                        "is gone)"
                    ) from None
                if who is not None:  # dead: take over; renamed first so only one of two takes it
                    grave = folder / f".compact-stale-{uuid.uuid4().hex}.tmp"
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(path, grave)
                        if grave.read_text() != seen:  # a fresh one taken meanwhile: put it back
                            with contextlib.suppress(FileExistsError):
                                os.link(grave, path)
                        grave.unlink()
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:
        if e.errno in NOT_WRITABLE:
            raise _read_only(store, e) from None
        raise
    raise StoreBusy(f"feature store {store.root}: could not take {path}; retry, or delete the file")


def compact(path, rows_per_chunk: int = COMPACT_ROWS) -> list[tuple[Path, int, int]]:
    """Merge the chunks of every store under ``path`` into chunks of ``rows_per_chunk`` rows
    (one row per image, duplicates dropped, unreadable chunks quarantined); returns (store,
    chunks before, after) of each. The merged chunks are renamed in before the old ones are
    removed, so a kill at any moment loses nothing. Refused while a writer or another compact
    runs (its own chunks would not be merged, and a reader started before may look for a removed
    chunk); a store that cannot be written is a one-line :class:`OutputError`."""
    done, found = [], stores(path)
    if not found:
        raise FileNotFoundError(f"no feature store under {path} (a cache= folder holds <layer>/<protocol>/)")
    for store in found:
        mine = _register(store)
        try:
            done.append(_compact_one(store, mine, rows_per_chunk))
        finally:
            with contextlib.suppress(OSError):
                mine.unlink()
    return done


def _compact_one(store: FeatureStore, mine: Path, rows_per_chunk: int) -> tuple[Path, int, int]:
    live = _live_writers(store, mine)
    if live:
        raise StoreBusy(
            f"feature store {store.root} is being written by {', '.join(live)}; run compact when "
            "no extraction writes to it (delete a writer's file if that process is gone)"
        )
    store.scan()
    old = [n for n, e in store.seen.items() if e is not None]
    for part in range(len(store.dims)):
        _merge(store, part, rows_per_chunk)
    if store.read_only:  # the merged rows could not be written: keep every old chunk
        raise OutputError(
            f"feature store {store.root} cannot be compacted: its chunks folder is not writable; "
            "nothing was changed"
        )
    for name in old:
        (store.chunks / name).unlink(missing_ok=True)
    unreadable = sorted({n for n, e in store.seen.items() if e is None} | set(store.damaged))
    for name in unreadable:
        _quarantine(store, name)
    return store.root, len(old), store.seq


def _quarantine(store: FeatureStore, name: str) -> None:
    """Move an unreadable chunk out of the chunks folder, keeping it for inspection."""
    q = store.root / "quarantine"
    q.mkdir(exist_ok=True)
    try:
        os.replace(store.chunks / name, q / name)
    except FileNotFoundError:
        return
    log.warning("feature store %s: unreadable chunk %s moved to %s", store.root, name, q)


def _merge(store: FeatureStore, part: int, rows_per_chunk: int) -> None:
    """Rewrite the rows of ``part`` as chunks of ``rows_per_chunk`` rows, reading each old chunk
    once, in name order (the order that decides between duplicates)."""
    keys, chunk, row, names = store.index(part)
    order = np.argsort(chunk, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(chunk[order])) + 1) if len(order) else []
    held_k, held_r = [], []
    for i, g in enumerate(groups):
        rows = np.empty((len(g), store.dims[part]), np.float32)
        if store.copy_rows(names[chunk[g[0]]], part, row[g], rows, slice(None), slice(None), 1.0):
            held_k.append(keys[g])
            held_r.append(rows)
        if held_k and (sum(map(len, held_k)) >= rows_per_chunk or i == len(groups) - 1):
            store.write(part, np.concatenate(held_k), np.concatenate(held_r))
            held_k, held_r = [], []
