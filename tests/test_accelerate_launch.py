"""`vggfeat extract` and an SVM script under the real `accelerate launch`, with two CPU ranks.

`accelerate launch --cpu --num_processes 2` runs one process (accelerate issue 2741); the
documented way to two CPU ranks is `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2` (gloo), which these tests use, and check that both ranks ran."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import test_cli
from conftest import REPO, free_port
from test_voc_caltech import TINY as SVM_TINY
from test_voc_caltech import make_voc

from vggfeat import cli

folder = test_cli.folder  # the fixture: three small images
pytestmark = pytest.mark.slow


def accelerate_launch(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(free_port()), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_accelerate_launch_of_the_extract_command_runs_two_ranks_and_writes_once(folder, tmp_path):
    out = tmp_path / "two.npy"
    r = accelerate_launch(
        "-m", "vggfeat.cli", "extract", folder, "--out", out, "--weights", "none", *test_cli.TINY
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("RANDOM WEIGHTS") == 2  # both ranks built the net and ran ...
    assert r.stdout.count("wrote") == 1  # ... and the main one wrote the files
    one = ["extract", str(folder), "--out", str(tmp_path / "one.npy"), "--weights", "none", *test_cli.TINY]
    assert cli.main(one) == 0
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "one.npy"), atol=1e-6)


def test_accelerate_launch_of_voc_svm_runs_two_ranks_and_writes_once(tmp_path):
    make_voc(tmp_path, per_split=3)
    out = tmp_path / "run"
    r = accelerate_launch(
        REPO / "benchmarks" / "voc_svm.py", "--root", tmp_path, *SVM_TINY, "--no-cache", "--out", out
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("RANDOM WEIGHTS") == 2
    assert r.stdout.count(f"wrote {out}") == 1
    assert len(json.loads((out / "results.json").read_text())["results"]["VGG Net-D"]["ap"]) == 20
