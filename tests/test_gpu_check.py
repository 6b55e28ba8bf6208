"""benchmarks/gpu_check.py without a GPU: one clear message, exit status 2, nothing written
(the checks themselves need CUDA and are run by hand; see the script's docstring)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import script

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_without_a_gpu_it_says_so_and_measures_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no CUDA GPU" in r.stderr and "nothing was measured" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and r.stdout == ""


def test_help_states_the_tolerances_the_checks_use():
    mod = script("gpu_check")
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert f"cosine similarity >= {mod.EXTRACT_MIN_COSINE}" in r.stdout
    assert f"total variation distance <= {mod.POSTERIOR_MAX_TV}" in " ".join(r.stdout.split())
