"""The demo's subprocesses: each step a command whose product is reused when its run folder
holds the stamp of the same command and inputs, several run side by side, a failure stopping
the others and reporting its log."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[3]  # recipes/ and benchmarks/ live beside the package
STAMP = "demo-step.json"
log = logging.getLogger("vggfeat")


def env() -> dict:
    # The scripts must import this very vggfeat (the checkout the demo runs from), offline.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # One compute thread per trainer: two trainers side by side fill two cores, where one
    # trainer's two OpenMP threads beside its decoding workers made an epoch 8x slower.
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def script(*parts: str) -> Path:
    path = REPO.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the demo runs the repository's scripts, so run it from a "
            "checkout of vggfeat (git clone ...; make demo), not from an installed wheel"
        )
    return path


@dataclass
class Job:
    """One subprocess whose ``product`` is reused when ``out`` holds the stamp of the same
    command and ``inputs`` (e.g. the data's marker); ``epochs`` sizes the progress bar."""

    cmd: list[str]
    out: Path
    product: Path
    inputs: str = ""
    epochs: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def key(self) -> list[str]:
        return [*self.cmd, self.inputs]

    def done(self, fresh: bool) -> bool:
        stamp = self.out / STAMP
        return (
            not fresh
            and self.product.exists()
            and stamp.exists()
            and json.loads(stamp.read_text()) == self.key()
        )

    def start(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)  # a stale run folder would be resumed
        self.out.mkdir(parents=True)
        with open(self.log, "w") as f:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=env(), cwd=REPO)

    @property
    def log(self) -> Path:
        return self.out.parent / f"{self.out.name}.log"

    def finish(self, desc: str) -> None:
        if self.proc.returncode != 0 or not self.product.exists():
            tail = "".join(self.log.read_text(errors="replace").splitlines(True)[-25:])
            raise RuntimeError(
                f"{desc} failed (exit code {self.proc.returncode}); see {self.log}. Its end:\n{tail}"
            )
        (self.out / STAMP).write_text(json.dumps(self.key()))

    def epochs_done(self) -> int:
        try:
            return len((self.out / "metrics.jsonl").read_text().splitlines())
        except OSError:
            return 0


def run_jobs(jobs: list[Job], *, parallel: int, desc: str, cfg) -> int:
    """Run the jobs whose product is not already there, ``parallel`` at a time (output to
    ``<out>.log``); a failure stops the others and raises with its log's end. Returns how many ran."""

    todo = [j for j in jobs if not j.done(cfg.fresh)]
    for j in jobs:
        if j not in todo:
            log.info("%s: reusing %s", desc, j.product)
    pending, running = list(todo), []
    total = sum(j.epochs for j in todo)
    try:
        with tqdm(desc=desc, total=total or None, disable=not (cfg.progress and todo), unit="epoch") as bar:
            while pending or running:
                while pending and len(running) < parallel:
                    running.append(pending.pop(0))
                    running[-1].start()
                time.sleep(0.5)
                for j in [j for j in running if j.proc.poll() is not None]:
                    running.remove(j)
                    j.finish(desc)
                bar.n = sum(j.epochs_done() for j in todo if j.proc is not None)
                bar.refresh()
    finally:
        for j in running:
            j.proc.kill()
            j.proc.wait()
    return len(todo)


def run_one(cmd: list[str], out: Path, product: Path, *, desc: str, cfg, inputs: str = "") -> bool:
    """One job: True if it ran, False if its product was reused."""
    return run_jobs([Job(cmd, out, product, inputs)], parallel=1, desc=desc, cfg=cfg) == 1
