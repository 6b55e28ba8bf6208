"""benchmarks/gpu_check.py without a GPU: one clear message, exit status 2, nothing written; and
the parts of its checks that run on the CPU: the comparison must fail on a wrong "device"
result, and the plain loop it times extraction against must compute what extract computes
(the checks themselves need CUDA and are run by hand; see the script's docstring)."""

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from conftest import script

import vggfeat

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


S = (224, 256)  # small scales keep the CPU run short


def tiny_net():
    torch.manual_seed(0)
    return vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10).eval()


def transposed(m):
    """A copy of ``m`` whose conv kernels are read transposed (height for width), as a wrong
    memory-layout path would read them: a wrong "device"."""
    wrong = copy.deepcopy(m)
    with torch.no_grad():
        for c in wrong.features:
            if isinstance(c, torch.nn.Conv2d):
                c.weight.copy_(c.weight.transpose(-1, -2).clone())
    return wrong


def bf16_rounded(m):
    """A copy of ``m`` with every weight rounded to bf16: the error the tolerance admits."""
    near = copy.deepcopy(m)
    with torch.no_grad():
        for p in near.parameters():
            p.copy_(p.bfloat16().float())
    return near


def test_posterior_check_fails_on_a_wrong_device_result_once_fc8_is_sharpened():
    mod = script("gpu_check")
    images = mod.make_images(3, seed=0)
    m = mod.sharpen(tiny_net(), images)
    ref = mod.outputs(m, images, "cpu", scales=S)
    same = mod.compare(ref, mod.outputs(m, images, "cpu", scales=S))
    assert same["extract"]["pass"] and same["posteriors"]["pass"]
    assert same["posteriors"]["min_top_posterior"] > 0.5  # peaked
    near = mod.compare(ref, mod.outputs(bf16_rounded(m), images, "cpu", scales=S))
    assert near["extract"]["pass"] and near["posteriors"]["pass"]  # bf16-sized errors pass
    bad = mod.compare(ref, mod.outputs(transposed(m), images, "cpu", scales=S))
    assert not bad["extract"]["pass"] and not bad["posteriors"]["pass"]
    assert bad["posteriors"]["max_total_variation"] > 5 * mod.POSTERIOR_MAX_TV
    # the same wrong result against the unsharpened net passes: why the check sharpens
    flat = tiny_net()
    flat_ref = mod.outputs(flat, images, "cpu", scales=S)
    flat_bad = mod.compare(flat_ref, mod.outputs(transposed(flat), images, "cpu", scales=S))
    assert flat_bad["posteriors"]["pass"] and flat_ref["P"].max(1).max() < 0.2


def test_plain_loop_resizes_and_computes_as_extract_does_on_the_same_device():
    mod = script("gpu_check")
    images = mod.make_images(2, seed=1)
    m = tiny_net()
    X = vggfeat.extract(images, model=m, scales=S, device="cpu", progress=False)
    np.testing.assert_allclose(mod.plain_descriptors(m, images, S, device="cpu"), X, atol=1e-5)


def test_precision_rows_check_each_precision_against_cpu_float32_and_run_on_the_cpu():
    mod = script("gpu_check")
    images = mod.make_images(2, seed=2)
    m = mod.sharpen(tiny_net(), images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulated on a CPU without AMX
        res = mod.agreement(m, images, "cpu", scales=S)
        bf16 = mod.outputs(m, images, "cpu", scales=S, precision="bf16")
    assert set(res) == {
        "extract",
        "posteriors",
        *(f"{k}_{p}" for p in mod.PRECISIONS for k in ("extract", "posteriors")),
    }
    assert set(mod.CHECKS) == set(res) | {"training"}
    assert all(r["pass"] for r in res.values())
    assert res["extract_fp32"]["min_cosine"] > 0.999999  # the same arithmetic on the same CPU
    assert res["extract_bf16"]["min_cosine"] < res["extract_fp32"]["min_cosine"]  # really bf16
    fp32 = mod.outputs(m, images, "cpu", scales=S, precision="fp32")
    assert not np.array_equal(bf16["X"], fp32["X"])
