"""GPU readiness: the CUDA path agrees with CPU float32 in each precision, trains under
Accelerate with bf16, and how close it runs to the GPU's own fp32 and bf16 GEMM peaks. One GPU,
under 5 minutes.

    python benchmarks/gpu_check.py                      # net D, writes runs/gpu_check/
    python benchmarks/gpu_check.py --config A --images 4 --train-steps 5

Checks (each passes or fails with its measured value beside the tolerance):
  extract     vggfeat.extract on CUDA (precision "auto": bf16 on GPUs with bf16 tensor cores) against
              CPU float32, same seeded net, same images (Q = 256, 384, 512, flips): the descriptors
              are L2-normalised, so the tolerance is on them directly: cosine similarity >= 0.999
              for every image. extract_fp32 and extract_bf16: the same, precision named (fp32 on
              CUDA convolves in TF32 where cuDNN allows it, torch's default).
  posteriors  evaluate.posteriors (dense, same scales) on CUDA ("auto"; posteriors_fp32 and
              posteriors_bf16 with the precision named) against CPU float32: total
              variation distance <= 0.02 per image (bf16 keeps 8 bits of mantissa: about 0.4%
              per operation, through 16 to 19 layers). fc8 is first scaled so that the class
              scores spread (std 4 across classes, as tests/test_evaluate.py sharpens its nets):
              a random net's posteriors are within 0.0012 of uniform, under which any CUDA
              result, right or wrong, would pass.
  training    a few SGD steps of the vggfeat training step under Accelerate(mixed_precision=
              "bf16") on one fixed batch: every loss finite and the last below the first.
Throughput (recorded, not judged): images/s and GFLOP/s, as a fraction of this GPU's GEMM peak
of the precision each ran in (fp32 and bf16, both measured in the same run), of (a)
vggfeat.extract in fp32, bf16 and auto beside a plain loop (below, bf16 autocast) and (b) the
vggfeat training step beside a plain torchvision training loop (torchvision's vgg of the same
config, eager, NCHW, autocast bf16). GFLOP/s count convs and FC layers (DenseVGG.flops; training
3x forward).

The nets are randomly initialised (seeded) unless ``--weights default`` finds torchvision's file in
the torch hub cache: nothing is downloaded. The extraction "plain" loop feeds the same dense net
one resized image (and its flip) per forward, eager, resized exactly as the engine resizes (the
uint8 image on the CPU, vggfeat.data.decode.resize_smallest) and run on the same device: what the
engine's batching by size, decoding workers and channels_last gain over that, and nothing else.

Writes <out>/gpu_check.json and <out>/gpu_check.md; exits 1 when a check fails, 2 when no CUDA GPU
is present (nothing is measured then).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vggfeat.options import add_options, from_args, option
from vggfeat.train.throughput import matmul_peak_gflops

SIZES = [(375, 500), (500, 375), (333, 500), (480, 640)]  # VOC-like (H, W)
EXTRACT_MIN_COSINE = 0.999
POSTERIOR_MAX_TV = 0.02


@dataclass(kw_only=True)
class Config:
    config: str = option("D", help="Table-1 net with torchvision weights layout (A, B, D, E)")
    weights: str = option(
        "none", help="none: seeded random; default: ImageNet, when torchvision's file is cached"
    )
    images: int = option(
        4, at_least=1, help="images compared between CPU and CUDA (CPU float32 is the slow side)"
    )
    throughput_images: int = option(64, at_least=1, help="images timed for extraction throughput")
    train_steps: int = option(10, at_least=1, help="SGD steps under Accelerate bf16")
    batch: int = option(32, at_least=1, help="training batch")
    out: Path = option(Path("runs/gpu_check"), help="folder for gpu_check.json and gpu_check.md")
    seed: int = 0


PRECISIONS = ("fp32", "bf16")  # each checked against CPU float32 and timed
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cuda_seconds(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def make_images(n: int, seed: int) -> list[np.ndarray]:
    """Smooth random RGB images of VOC-like sizes (uint8 H x W x 3)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        base = torch.from_numpy(rng.random((1, 3, h // 16 + 2, w // 16 + 2), dtype=np.float32))
        img = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        out.append((img[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    return out


def net(cfg: Config, num_classes: int = 1000):
    import vggfeat

    torch.manual_seed(cfg.seed)
    weights = None if cfg.weights == "none" or num_classes != 1000 else cfg.weights
    return vggfeat.vgg(cfg.config, weights=weights, num_classes=num_classes).eval()


SCALES = (256, 384, 512)
CHECKS = (
    "extract",
    "posteriors",
    *(f"{k}_{p}" for p in PRECISIONS for k in ("extract", "posteriors")),
    "training",
)
SPREAD = 4.0  # std of the class scores across classes after sharpen()


def sharpen(m, images, spread: float = SPREAD):
    """``m`` with fc8 scaled so the class scores of the first image (Q = 256, CPU) spread over
    ``spread`` (std across classes): peaked posteriors, under which a wrong result shows."""
    import vggfeat

    s = vggfeat.extract(
        images[:1],
        model=m,
        layer="fc8",
        normalize=False,
        flip=False,
        scales=(256,),
        device="cpu",
        progress=False,
    )[0]
    fc8 = m.classifier[6]
    with torch.no_grad():
        fc8.weight.mul_(spread / float(np.std(s - fc8.bias.detach().cpu().numpy())))
    return m


def outputs(m, images, device, scales=SCALES, precision="auto") -> dict:
    """Descriptors and dense posteriors of ``images`` on ``device`` in ``precision``
    (:mod:`vggfeat.features.precision`; "auto": bf16 on GPUs with bf16 tensor cores)."""
    import vggfeat
    from vggfeat import evaluate

    kw = dict(scales=scales, device=device, progress=False, precision=precision)
    return {
        "X": vggfeat.extract(images, model=m, **kw),
        "P": evaluate.posteriors(m, images, **kw),
    }


def check_agreement(cfg: Config, images, device: str = "cuda") -> dict:
    """CPU float32 against ``device``: descriptors (cosine) and posteriors (total variation)."""
    return agreement(sharpen(net(cfg), images), images, device)


def agreement(m, images, device: str, scales=SCALES) -> dict:
    """The checks of ``device`` against CPU float32: "auto" as ``extract``/``posteriors``, each
    of :data:`PRECISIONS` as ``extract_<p>``/``posteriors_<p>``."""
    ref = outputs(m, images, "cpu", scales, precision="fp32")
    res = compare(ref, outputs(m, images, device, scales))
    for p in PRECISIONS:
        res |= {
            f"{k}_{p}": v for k, v in compare(ref, outputs(m, images, device, scales, precision=p)).items()
        }
    return res


def compare(ref: dict, got: dict) -> dict:
    """The verdicts of the agreement checks: ``got`` (the device's :func:`outputs`) against
    ``ref`` (CPU float32)."""
    cos = np.sum(ref["X"] * got["X"], axis=1) / (
        np.linalg.norm(ref["X"], axis=1) * np.linalg.norm(got["X"], axis=1)
    )
    tv = 0.5 * np.abs(ref["P"] - got["P"]).sum(axis=1)
    top1 = float(np.mean(ref["P"].argmax(1) == got["P"].argmax(1)))
    return {
        "extract": {
            "min_cosine": float(cos.min()),
            "tolerance": f">= {EXTRACT_MIN_COSINE}",
            "pass": bool(cos.min() >= EXTRACT_MIN_COSINE),
        },
        "posteriors": {
            "max_total_variation": float(tv.max()),
            "top1_agreement": top1,
            "min_top_posterior": float(ref["P"].max(1).min()),  # how peaked the reference is
            "tolerance": f"<= {POSTERIOR_MAX_TV}",
            "pass": bool(tv.max() <= POSTERIOR_MAX_TV),
        },
    }


def check_training(cfg: Config, peak: float) -> dict:
    """A few vggfeat training steps under Accelerate bf16 on one fixed batch, and their rate
    beside a plain torchvision loop with autocast bf16."""
    from accelerate import Accelerator
    from torchvision import models

    from vggfeat.nets.models import TORCHVISION_NAMES
    from vggfeat.train.loop import batch_loss
    from vggfeat.train.throughput import forward_flops

    acc = Accelerator(mixed_precision="bf16")
    model = net(cfg, num_classes=10).train()
    pre = model.preprocess
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model, opt = acc.prepare(model, opt)
    x = torch.rand(cfg.batch, 3, 224, 224, device=acc.device)
    y = torch.randint(0, 10, (cfg.batch,), device=acc.device)
    losses = []

    def ours():
        loss = batch_loss(model, x, y, preprocess=pre, channels_last=True)
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach().item())

    tv = getattr(models, TORCHVISION_NAMES[cfg.config])(num_classes=10).cuda()
    tv_opt = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9)

    def plain():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(tv(x), y)
        tv_opt.zero_grad()
        loss.backward()
        tv_opt.step()

    secs = {
        name: [_cuda_seconds(fn) for _ in range(cfg.train_steps)]
        for name, fn in (("vggfeat", ours), ("plain", plain))
    }
    gflop = 3 * forward_flops(tv, x[:1]) / 1e9
    rates = {k: cfg.batch / float(np.median(v[1:] or v)) for k, v in secs.items()}  # first step warms up
    ok = all(np.isfinite(losses)) and losses[-1] < losses[0]
    return {
        "training": {"losses": losses, "pass": bool(ok), "tolerance": "finite, last < first"},
        "train_throughput": {
            k: {"images_per_s": r, "gflops": r * gflop, "fraction_of_bf16_peak": r * gflop / peak}
            for k, r in rates.items()
        },
    }


def plain_descriptors(m, images, scales=SCALES, device="cuda") -> np.ndarray:
    """The plain loop: per image, per scale, per flip one eager forward of ``m``'s dense net on
    ``device``; each image resized as vggfeat's engine resizes it (uint8, on the CPU, by
    ``vggfeat.data.decode.resize_smallest``), so that the timing compares the two loops and not two
    resize kernels. Returns the appendix-B descriptors (mean over scales, L2)."""
    from vggfeat.data.decode import resize_smallest

    device = torch.device(device)
    dense, rows = m.to(device).dense(), []
    for im in images:
        t = torch.from_numpy(im).permute(2, 0, 1)
        per_q = []
        for q in scales:
            r = m.preprocess.apply(resize_smallest(t, q).to(device).float().div(255)[None])
            with (
                torch.no_grad(),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
            ):
                f = [dense(v, "fc7").float().mean(dim=(-2, -1)) for v in (r, torch.flip(r, dims=[-1]))]
            per_q.append((f[0] + f[1]) / 2)
        rows.append(torch.nn.functional.normalize(torch.cat(per_q).mean(0), dim=0).cpu().numpy())
    return np.stack(rows)


def extract_throughput(cfg: Config, peak: float, peaks: dict | None = None) -> dict:
    """vggfeat.extract (dense, 3 scales, flips) in fp32, bf16 and auto against the plain loop
    (bf16 autocast) over the same images (:func:`plain_descriptors`), all on the GPU, all
    resizing the same way; each as a fraction of the bf16 GEMM peak ``peak`` and of the peak of
    its own precision (``peaks``: precision -> GFLOP/s)."""
    import vggfeat
    from vggfeat.features.precision import resolve

    images = make_images(cfg.throughput_images, cfg.seed + 1)
    m = net(cfg).cuda()
    dense = m.dense()
    per_image = []
    for im in images:
        h, w = im.shape[:2]
        per_image.append(sum(2 * dense.flops(*_resized(h, w, q), "fc7") for q in SCALES))
    gflop = sum(per_image) / 1e9
    peaks = peaks or {"bf16": peak}
    secs, ran = {}, {}
    for p in ("auto", *PRECISIONS):
        kw = dict(model=m, device="cuda", progress=False, precision=p)
        vggfeat.extract(images[:2], **kw)  # warm-up
        name = "vggfeat" if p == "auto" else f"vggfeat {p}"
        secs[name] = _cuda_seconds(lambda kw=kw: vggfeat.extract(images, **kw))
        ran[name] = resolve(p, "cuda").name
    plain_descriptors(m, images[:1])  # warm-up
    secs["plain"], ran["plain"] = _cuda_seconds(lambda: plain_descriptors(m, images)), "bf16"
    n = len(images)
    return {
        k: {
            "images_per_s": n / s, "gflops": gflop / s, "fraction_of_bf16_peak": gflop / s / peak,
            "precision": ran[k], "fraction_of_own_peak": gflop / s / peaks.get(ran[k], peak),
        }
        for k, s in secs.items()
    }  # fmt: skip


def _resized(h: int, w: int, q: int) -> tuple[int, int]:
    return (q, round(w * q / h)) if h <= w else (round(h * q / w), q)


def report(res: dict) -> str:
    lines = [
        f"# GPU check: {res['gpu']} ({res['date']})",
        "",
        "| check | measured | tolerance | result |",
        "|---|---|---|---|",
    ]
    for name in CHECKS:
        r = res[name]
        measured = {k: v for k, v in r.items() if k not in ("tolerance", "pass")}
        verdict = "pass" if r["pass"] else "FAIL"
        lines.append(f"| {name} | {json.dumps(measured)[:120]} | {r['tolerance']} | {verdict} |")
    peaks = res.get("gemm_peak_gflops", {"bf16": res["bf16_peak_gflops"]})
    lines += ["", "GEMM peaks: " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()), ""]
    lines += [
        "| workload | loop | precision | images/s | GFLOP/s | fraction of bf16 peak | of its own "
        "precision's |",
        "|---|---|---|---|---|---|---|",
    ]
    for work in ("extract_throughput", "train_throughput"):
        for loop, r in res[work].items():
            lines.append(
                f"| {work.split('_')[0]} | {loop} | {r.get('precision', 'bf16')} | {r['images_per_s']:.1f} | "
                f"{r['gflops']:.0f} | {r['fraction_of_bf16_peak']:.2f} | "
                f"{r.get('fraction_of_own_peak', r['fraction_of_bf16_peak']):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(cfg: Config) -> int:
    if not torch.cuda.is_available():
        print(
            "gpu_check.py: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
            "nothing was measured. Run it on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    # the library's GEMM yardstick, at the size that fills a large GPU
    peaks = {p: matmul_peak_gflops("cuda", n=8192, repeat=10, dtype=dt) for p, dt in DTYPES.items()}
    peak = peaks["bf16"]
    res = {"gpu": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    res |= {"config": {k: str(v) for k, v in asdict(cfg).items()}, "bf16_peak_gflops": peak}
    res["gemm_peak_gflops"] = peaks
    res |= check_agreement(cfg, make_images(cfg.images, cfg.seed))
    res |= check_training(cfg, peak)
    res["extract_throughput"] = extract_throughput(cfg, peak, peaks)
    res["seconds"] = time.perf_counter() - t0
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    (cfg.out / "gpu_check.md").write_text(md := report(res))
    print(md)
    print(f"wrote {cfg.out / 'gpu_check.json'} and {cfg.out / 'gpu_check.md'} in {res['seconds']:.0f} s")
    return 0 if all(res[k]["pass"] for k in CHECKS) else 1


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


if __name__ == "__main__":
    sys.exit(main(from_args(Config, get_args_parser().parse_args())))
