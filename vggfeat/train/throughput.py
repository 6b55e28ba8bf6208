"""Training throughput: our trainer's step against a plain torchvision loop, and against peak.

Both loops train the same network (same config, classes and batch) on random data, so the
figures isolate the step itself: images per second, and GFLOP/s counted as 3x the forward
FLOPs (forward + two backward matmuls per layer) of convs and linears, by
``torch.utils.flop_counter.FlopCounterMode``, set against the machine's fp32 matmul peak.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..nets.models import TORCHVISION_NAMES
from ..nets.preprocess import Preprocess
from ..weights.loader import vgg
from .loop import batch_loss


def matmul_peak_gflops(device="cpu", n: int = 2048, repeat: int = 5) -> float:
    """Measured fp32 GEMM rate on ``device`` (best of ``repeat``) in GFLOP/s: the yardstick the
    training and extraction benchmarks report their GFLOP/s against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = min(_timed(lambda: (a @ b, sync())) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_flops(model, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _rate(step, batch: int, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    return batch * steps / sum(_timed(step) for _ in range(steps))


def _our_step(acc, model, opt, x, y, preprocess, channels_last: bool):
    def step():
        loss = batch_loss(model, x, y, preprocess=preprocess, channels_last=channels_last)
        acc.backward(loss)
        opt.step()
        opt.zero_grad()

    return step


def compare(
    *,
    config: str = "A",
    num_classes: int = 1000,
    batch: int = 16,
    size: int = 224,
    warmup: int = 2,
    steps: int = 5,
) -> dict:
    """Images/s of (a) the vggfeat trainer step (Accelerate-prepared model and optimiser,
    mean-RGB preprocessing, channels_last on and off) and (b) a plain torchvision loop (vgg11/16,
    NCHW, eager), on one batch of random images; plus GFLOP/s and the matmul peak."""
    from accelerate import Accelerator
    from torchvision import models

    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))
    out = {"config": config, "batch": batch, "size": size, "threads": torch.get_num_threads()}
    acc = Accelerator(cpu=not torch.cuda.is_available())
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = vgg(config, num_classes=num_classes, preprocess=Preprocess.mean_rgb((0.48, 0.46, 0.41)))
        pre = model.preprocess
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
        model, opt = acc.prepare(model, opt)
        xd, yd = x.to(acc.device), y.to(acc.device)

        ours = _our_step(acc, model, opt, xd, yd, pre, channels_last)
        out[f"vggfeat_channels_last={channels_last}"] = _rate(ours, batch, warmup, steps)
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
    out["train_gflop_per_image"] = 3 * forward_flops(tv, x[:1].to(acc.device)) / 1e9
    out["matmul_peak_gflops"] = matmul_peak_gflops(acc.device)
    best = max(v for k, v in out.items() if k.startswith("vggfeat_"))
    out["speedup"] = best / out["torchvision_plain"]
    out["vggfeat_gflops"] = best * out["train_gflop_per_image"]
    out["plain_gflops"] = out["torchvision_plain"] * out["train_gflop_per_image"]
    return out
