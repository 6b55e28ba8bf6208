"""Training throughput: our trainer's step against a plain torchvision loop, and against peak.

Both loops train the same network (same config, classes and batch) on random data, so the
figures isolate the step itself: images per second, and GFLOP/s counted as 3x the forward
FLOPs (forward + two backward matmuls per layer) of convs and linears, by
``torch.utils.flop_counter.FlopCounterMode``, set against the machine's GEMM peak of the step's
precision (fp32, and bf16 under Accelerate's mixed precision), measured in the same run.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import models

from ..features.precision import DTYPES
from ..nets.models import TORCHVISION_NAMES
from ..nets.preprocess import Preprocess
from ..weights.loader import vgg
from .loop import batch_loss


def matmul_peak_gflops(
    device="cpu", n: int = 2048, repeat: int = 5, dtype: torch.dtype = torch.float32, budget_s: float = 0.5
) -> float:
    """Measured GEMM rate on ``device`` in ``dtype`` (best of ``repeat`` n x n products) in
    GFLOP/s: the yardstick the training and extraction benchmarks report their GFLOP/s against,
    each against its own precision's. n grows from 256 up to ``n`` while one product is expected
    to take at most ``budget_s`` (bf16 emulated on a CPU without AMX or avx512_bf16 runs at a
    few GFLOP/s), so the measurement stays short everywhere."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    size = 256
    while True:
        a, b = (
            torch.randn(size, size, device=device, dtype=dtype),
            torch.randn(size, size, device=device, dtype=dtype),
        )
        first = min(_timed(lambda a=a, b=b: (a @ b, sync())) for _ in range(2))  # the first one cold
        if size >= n or 8 * first > budget_s:
            break
        size *= 2
    best = min(_timed(lambda: (a @ b, sync())) for _ in range(repeat))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_flops(model, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode  # deferred: only benchmarks count FLOPs

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _rate(step, batch: int, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    return batch * steps / sum(_timed(step) for _ in range(steps))


def _our_step(acc, model, opt, x, y, preprocess, channels_last: bool, losses: list | None = None):
    def step():
        with acc.autocast():  # Accelerate's mixed precision (bf16 autocast on CPU or GPU)
            loss = batch_loss(model, x, y, preprocess=preprocess, channels_last=channels_last)
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        if losses is not None:
            losses.append(float(loss.detach()))

    return step


def _accelerator(mixed_precision: str):
    """A fresh Accelerator with ``mixed_precision`` ("no" or "bf16"): Accelerate keeps one state
    per process, reset here so that both precisions are measured in one run."""
    from accelerate import Accelerator  # deferred: accelerate adds to start-up
    from accelerate.state import AcceleratorState  # deferred: accelerate adds to start-up

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)


def _model(config, num_classes, channels_last):
    torch.manual_seed(0)
    model = vgg(config, num_classes=num_classes, preprocess=Preprocess.mean_rgb((0.48, 0.46, 0.41)))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    return model, opt


def compare(
    *,
    config: str = "A",
    num_classes: int = 1000,
    batch: int = 16,
    size: int = 224,
    warmup: int = 2,
    steps: int = 5,
    parity_steps: int = 6,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
) -> dict:
    """Images/s of (a) the vggfeat trainer step (Accelerate-prepared model and optimiser,
    mean-RGB preprocessing) in fp32 (channels_last on and off) and, for each other of
    ``precisions``, under Accelerate's mixed precision (channels_last); (b) a plain torchvision
    loop (vgg11/16, NCHW, eager, fp32), on one batch of random images; GFLOP/s against the
    measured GEMM peak of each precision. Loss-curve parity: every precision trains the same
    initial net on the same batch for ``parity_steps`` steps (NCHW); ``loss_curves`` and each
    curve's largest difference from fp32's (``loss_parity``, absolute and relative)."""

    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))
    out = {"config": config, "batch": batch, "size": size, "threads": torch.get_num_threads()}
    curves = {}
    for p in precisions:
        acc = _accelerator({"fp32": "no"}.get(p, p))
        xd, yd = x.to(acc.device), y.to(acc.device)
        for channels_last in (False, True) if p == "fp32" else (True,):
            model, opt = _model(config, num_classes, channels_last)
            pre = model.preprocess
            model, opt = acc.prepare(model, opt)
            out[f"vggfeat_{p}_channels_last={channels_last}"] = _rate(
                _our_step(acc, model, opt, xd, yd, pre, channels_last), batch, warmup, steps
            )
        model, opt = acc.prepare(*_model(config, num_classes, False))
        curves[p] = []
        step = _our_step(acc, model, opt, xd, yd, pre, False, curves[p])
        for _ in range(parity_steps):
            step()
        out[f"matmul_peak_gflops_{p}"] = matmul_peak_gflops(acc.device, dtype=DTYPES[p])
    tv = getattr(models, TORCHVISION_NAMES[config])(num_classes=num_classes).to(acc.device)
    tv_opt = torch.optim.SGD(tv.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    norm = Preprocess.imagenet()
    xd, yd = x.to(acc.device), y.to(acc.device)

    def plain():
        loss = F.cross_entropy(tv(norm.apply(xd)), yd)
        tv_opt.zero_grad()
        loss.backward()
        tv_opt.step()

    out["torchvision_plain"] = _rate(plain, batch, warmup, steps)
    out["train_gflop_per_image"] = g = 3 * forward_flops(tv, x[:1].to(acc.device)) / 1e9
    out["matmul_peak_gflops"] = out["matmul_peak_gflops_fp32"]
    fp32 = max(v for k, v in out.items() if k.startswith("vggfeat_fp32_"))
    out["speedup"] = fp32 / out["torchvision_plain"]
    out["vggfeat_gflops"] = fp32 * g
    out["plain_gflops"] = out["torchvision_plain"] * g
    for p in precisions:
        best = max(v for k, v in out.items() if k.startswith(f"vggfeat_{p}_"))
        out[f"{p}_over_fp32"] = best / fp32
        out[f"{p}_fraction_of_own_peak"] = best * g / out[f"matmul_peak_gflops_{p}"]
    out["loss_curves"] = curves
    ref = np.array(curves["fp32"]) if "fp32" in curves else None
    out["loss_parity"] = {
        p: {
            "max_abs": float(np.abs(np.array(c) - ref).max()),
            "max_rel": float((np.abs(np.array(c) - ref) / np.abs(ref)).max()),
        }
        for p, c in curves.items()
        if ref is not None and p != "fp32"
    }
    return out
