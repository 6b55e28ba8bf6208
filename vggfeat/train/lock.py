"""One run per run folder: ``<run>/LOCK`` names the process that trains there.

The main process (rank 0) creates the file with ``O_CREAT | O_EXCL`` (atomic on local file
systems and on NFSv3+, no lock daemon needed) and writes its host, pid and start time into it;
it holds it for the whole run and removes it on exit. A second run, or a ``--resume`` started
while the previous run's ranks are still alive, finds the file and is refused with the holder's
name. ``torchrun`` starts each rank in a session of its own, so killing the launcher's process
group can leave rank 0 running: that is exactly the case the lock catches, because the holder is
rank 0 itself, not the launcher. A lock whose pid is dead on this host (a killed run) is stale
and taken over with a log line; a holder on another host cannot be checked from here, so its
lock is only taken over after the user deletes the file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import RunLocked
from ..features.distributed import from_main
from ..files import pid_alive

log = logging.getLogger("vggfeat")
LOCK_FILE = "LOCK"


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a reused pid apart), None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here
    pid = int(holder["pid"])
    if not pid_alive(pid):  # gone, or a zombie (killed, not yet reaped)
        return False
    started = holder.get("proc_start")
    return started is None or _proc_start(pid) in (None, started)


def describe(holder: dict) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


class RunLock:
    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self.me = dict(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            proc_start=_proc_start(os.getpid()),
        )
        self.held = False
        self.created = False  # the run folder was made for this run: removed if left empty

    def acquire(self) -> None:
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._judge_holder()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.me))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise RunLocked(f"{self.path}: could not take the run lock; retry, or delete the file")

    def _judge_holder(self) -> None:
        """Raise if the lock's holder lives; otherwise remove the stale lock."""
        try:
            seen = self.path.read_text()
        except FileNotFoundError:
            return
        try:
            holder = json.loads(seen)
            int(holder["pid"])
        except (ValueError, TypeError, KeyError):  # being written now, or left so by a crash
            try:
                fresh = time.time() - self.path.stat().st_mtime < 10
            except FileNotFoundError:
                return
            if fresh:
                time.sleep(0.2)
                return
            holder = {"host": self.me["host"], "pid": -1}
        if holder["pid"] != -1 and _alive(holder):
            raise RunLocked(
                f"{self.path.parent} is in use by another run ({describe(holder)}); wait for it to "
                "end or stop it (all its ranks), or choose another --name. If no run uses it, "
                f"delete {self.path}"
            )
        log.warning("taking over the lock of a run that is gone (%s)", describe(holder))
        # Rename first, so that of two processes taking over only one removes this very file.
        grave = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if grave.read_text() != seen:  # a fresh lock taken meanwhile: put it back
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        grave.unlink()

    def release(self, *, remove_empty: bool = False) -> None:
        """Remove the lock file; with ``remove_empty``, also the run folder if this lock made it and
        nothing was written there (a run refused at start, e.g. by its --data check)."""
        if not self.held:
            return
        self.held = False
        try:
            if json.loads(self.path.read_text()).get("pid") == self.me["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        if remove_empty and self.created:
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def hold_run_lock(run_dir, state) -> RunLock:
    """Collective: the main process takes the lock, every process learns whether it got it (so
    that no rank starts work in a folder another run uses)."""

    lock = RunLock(run_dir)

    def take() -> str | None:  # the refusal's message, None once the lock is held
        try:
            lock.acquire()
        except RunLocked as e:
            return str(e)
        return None

    message = from_main(state, take)
    if message:
        raise RunLocked(message)
    return lock
