"""bf16 mixed precision in the trainer on CPU (Accelerate's autocast): ``--mixed-precision
auto`` follows the precision policy, a bf16 run really computes in bf16, and a bf16 run killed
mid-epoch resumes bit-exactly."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train import RECIPE, TINY, _args, _env, _run, _weights, write_imagefolder

from vggfeat.features import precision as policy
from vggfeat.features.precision import Capability
from vggfeat.train import ConfigError, TrainConfig, check_config
from vggfeat.train.checkpoint import MARKER, complete_checkpoints
from vggfeat.train.setup import mixed_precision


def test_mixed_precision_auto_follows_the_policy_and_unknown_values_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(policy, "probe", lambda device: Capability("cpu", frozenset({"amx_bf16"})))
    assert mixed_precision("auto") == "bf16"
    monkeypatch.setattr(policy, "probe", lambda device: Capability("cpu", frozenset({"avx2"})))
    assert mixed_precision("auto") == "no"
    assert [mixed_precision(v) for v in (None, "no", "bf16")] == [None, "no", "bf16"]
    with pytest.raises(ConfigError, match="--mixed-precision half: choose one of no, bf16, fp16, auto"):
        check_config(TrainConfig(data=str(tmp_path), mixed_precision="half"))


@pytest.mark.slow
def test_bf16_run_differs_from_fp32_and_resumes_bit_exactly_after_sigkill(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=6)  # 18 images, 9 steps per epoch
    out = tmp_path / "runs"
    common = {**{k: v for k, v in TINY.items() if k != "progress"}, "batch_size": 2, "epochs": 2}
    bf16 = {**common, "mixed_precision": "bf16"}
    _run([sys.executable, str(RECIPE)] + _args(data, out, "fp32", **common, mixed_precision="no"))
    _run([sys.executable, str(RECIPE)] + _args(data, out, "ref", **bf16))
    a, f = _weights(out / "ref"), _weights(out / "fp32")
    assert any(not torch.equal(a[k], f[k]) for k in a)  # bf16 autocast changed the arithmetic
    killed = out / "killed"
    cmd = [sys.executable, str(RECIPE)] + _args(
        data, out, "killed", **bf16, checkpoint_every=2, keep=2, step_delay=0.25
    )
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (killed / "checkpoints" / "step_00000012" / MARKER).exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = complete_checkpoints(killed / "checkpoints")
    assert not (killed / "final.safetensors").exists() and ckpts
    res = _run(
        [sys.executable, str(RECIPE)] + _args(data, out, "killed", **bf16, checkpoint_every=2, resume=True)
    )
    assert f"resumed from {ckpts[-1]}:" in res.stderr
    b = _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
