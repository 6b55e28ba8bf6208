"""The command's start-up: torch's thread count set on purpose (its default beside the decoding
workers made `vggfeat extract` 6x slower on 2 cores), scikit-learn left out of the command's
imports, and the benchmark comparing the command with a warm process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggfeat import cli
from vggfeat.cli import common

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "threads, workers, omp, cpus, want",
    [
        (3, None, "", 16, 3),  # given
        (None, None, "5", 16, 5),  # the user's OMP_NUM_THREADS
        (None, None, "", 2, 1),  # 2 CPUs, 2 decoding workers: one compute thread
        (None, None, "", 16, 14),
        (None, 0, "", 16, 16),  # no workers: every CPU
    ],
)
def test_thread_count_leaves_a_cpu_to_each_decoding_worker(monkeypatch, threads, workers, omp, cpus, want):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert common.compute_threads(threads, workers) == want


def test_extract_sets_torchs_thread_count(tmp_path, monkeypatch):
    from conftest import random_image

    random_image(230, 250).save(tmp_path / "0.png")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    before = torch.get_num_threads()
    try:
        argv = [
            "extract",
            str(tmp_path / "0.png"),
            "--weights",
            "none",
            "--width",
            "0.0625",
            "--fc-dim",
            "32",
        ]
        assert cli.main([*argv, "--scales", "224", "--quiet", "--out", str(tmp_path / "f.npy")]) == 0
        assert torch.get_num_threads() == 1  # 3 CPUs - 2 decoding workers
    finally:
        torch.set_num_threads(before)


def test_the_command_does_not_import_scikit_learn():
    code = "import sys, vggfeat.cli, vggfeat.cli.extract; print('sklearn' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}
    )
    assert r.stdout.split() == ["False"], r.stderr
    from vggfeat.cli.svm import SVMOptions  # the SVM scripts find their options there

    assert "c_grid" in SVMOptions.__dataclass_fields__


@pytest.mark.slow
def test_startup_benchmark_compares_the_command_with_a_warm_process(tmp_path):
    out = tmp_path / "b"
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cli_startup.py"), "--images", "12", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["same_features"] and res["torch_threads"] == 1
    assert res["cli_over_warm"] == pytest.approx(res["cli_wall_s"] / res["warm_call_s"])
    assert "CLI / warm" in r.stdout
