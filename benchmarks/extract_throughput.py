"""Throughput of vggfeat.extract in each precision against a naive torchvision loop and timm's
dense head, and against the machine's fp32 and bf16 GEMM peaks, in one run.

    python benchmarks/extract_throughput.py                      # net D, 8 VOC-like images
    python benchmarks/extract_throughput.py --images 4 --scales 256   # short, first call on 4 images
    python benchmarks/extract_throughput.py --width 0.25 --images 16  # quick (no timm rows)
    python benchmarks/extract_throughput.py --device cuda        # GPU

Every row computes the same appendix-B descriptor (dense fc7 at every Q, global average
pooling, flip average, mean over scales, L2) on the same images of mixed sizes (500x375,
375x500 and others, as VOC):

- vggfeat in each of ``--precision`` (default fp32, bf16 and auto, auto resolved as
  :mod:`vggfeat.features.precision` decides on this machine), and fp32 with 2 decoding workers
  (the default takes none below 8 images);
- naive: what a user would write, a loop over images, scales and flips, PIL + torchvision
  transforms, NCHW, eager, one image per forward (fp32);
- timm: the same loop over timm's VGG with its dense head (``forward_features``, then the
  ``ConvMlp`` pre-logits: fc6 as a 7x7 conv), fp32 and under ``torch.autocast`` bf16, with the
  vggfeat net's weights copied in; only at the paper's widths (width 1, fc 4096), autocast
  only when ``--precision`` names bf16.

Each row runs in its own process (its peak RSS is its own) and is timed on all the images:
the first call (cold: thread pools, oneDNN primitives, worker start-up), then ``--repeat`` warm
calls, the fastest of which is its throughput. GFLOP/s counts convs and FC-as-conv layers; each
row's fraction is of the GEMM peak of the precision it ran in, fp32 or bf16, both measured at
the start of the run.
Writes runs/extract_throughput/results.json and prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vggfeat.features.dense import default_device
from vggfeat.features.precision import DTYPES, resolve
from vggfeat.options import PRECISIONS, add_options, from_args, option
from vggfeat.train.throughput import matmul_peak_gflops

Side_ = Literal["naive", "vggfeat", "vggfeat-workers", "timm", "timm-autocast"]  # a row's process
SIZES = [(375, 500), (500, 375), (375, 500), (333, 500), (500, 333), (480, 640), (375, 500), (500, 375)]


def make_images(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        p = folder / f"{i:03d}.jpg"
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(p, quality=90)
        paths.append(str(p))
    return paths


def build_model(args):
    import vggfeat

    torch.manual_seed(0)
    return vggfeat.vgg(args.model, width=args.width, fc_dim=args.fc_dim).eval()


def naive(model, paths, scales, device, forward=None, autocast: bool = False):
    """The per-image loop a user would write with torchvision; ``forward(x)`` -> the fc7 map
    (by default the vggfeat net's convs, then fc6 and fc7 as convolutions)."""
    from PIL import Image
    from torchvision import transforms as T

    pre = model.preprocess
    model = model.to(device)
    fc6, fc7 = model.classifier[0], model.classifier[3]

    def ours(v):
        f = model.features(v)
        h = torch.relu(torch.nn.functional.conv2d(f, fc6.weight.view(-1, f.shape[1], 7, 7), fc6.bias))
        return torch.relu(torch.nn.functional.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))

    forward = forward or ours
    norm = T.Normalize(pre.mean, pre.std)
    rows = []
    kind = torch.device(device).type
    with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16, enabled=autocast):
        for p in paths:
            img = Image.open(p).convert("RGB")
            descs = []
            for q in scales:
                x = norm(T.ToTensor()(T.Resize(q)(img)))[None].to(device)
                for v in (x, torch.flip(x, dims=[3])):
                    descs.append(forward(v).float().mean(dim=(2, 3))[0])
            d = torch.stack(descs).view(len(scales), 2, -1).mean(1).mean(0)
            rows.append((d / d.norm()).cpu().numpy())
    return np.stack(rows)


def timm_net(model):
    """timm's VGG of the same config with the vggfeat net's weights (its head: a ConvMlp)."""
    import timm

    from vggfeat.nets.models import TORCHVISION_NAMES

    net = timm.create_model(TORCHVISION_NAMES[model.config], pretrained=False, num_classes=model.num_classes)
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    fc = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    sd["pre_logits.fc1.weight"] = fc[0].weight.view(fc[0].out_features, -1, 7, 7)
    sd["pre_logits.fc2.weight"] = fc[1].weight[:, :, None, None]
    sd |= {"pre_logits.fc1.bias": fc[0].bias, "pre_logits.fc2.bias": fc[1].bias}
    sd |= {"head.fc.weight": fc[2].weight, "head.fc.bias": fc[2].bias}
    net.load_state_dict(sd)
    return net.eval()


def _call(args, model, paths):
    """One call of the row's implementation on every image -> descriptors."""
    import vggfeat

    if args.side == "naive":
        return naive(model, paths, args.scales, args.device)
    if args.side.startswith("timm"):
        net = timm_net(model).to(args.device)
        fwd = lambda v: net.pre_logits(net.forward_features(v))  # noqa: E731
        return naive(model, paths, args.scales, args.device, fwd, autocast=args.side == "timm-autocast")
    return vggfeat.extract(
        paths,
        model=model,
        scales=args.scales,
        device=args.device,
        batch_size=args.batch_size,
        progress=False,
        precision=args.precision[0],
        num_workers=2 if args.side == "vggfeat-workers" else None,
    )


def worker(args) -> dict:
    paths = json.loads(Path(args.paths).read_text())
    model = build_model(args)
    t0 = time.perf_counter()
    _call(args, model, paths)  # the first call: cold
    first = time.perf_counter() - t0
    secs = np.inf
    for _ in range(args.repeat):  # the fastest warm call: the least disturbed by other load
        t0 = time.perf_counter()
        X = _call(args, model, paths)
        secs = min(secs, time.perf_counter() - t0)
    np.save(args.out, np.asarray(X))
    return {
        "first_call_seconds": first,
        "seconds": secs,
        "images_per_s": len(paths) / secs,
        "first_call_images_per_s": len(paths) / first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def total_gflops(model, paths, scales) -> float:
    """Forward FLOPs of the whole protocol: every image, scale and flip, up to fc7."""
    from vggfeat.data.decode import image_size, resized_size

    net = model.dense()
    return (
        sum(2 * net.flops(*resized_size(*image_size(p), q), layer="fc7") for p in paths for q in scales) / 1e9
    )


def layout_probe(args, peak: float, reps: int = 3) -> dict:
    """Where fp32 time goes: the dense net's forward up to fc7 on one 4:3 image and its flip at
    the first Q, NCHW against channels_last (alternated, best of ``reps`` each, so that other
    load on the machine falls on both alike), as GFLOP/s and fraction of the fp32 GEMM peak;
    and torch.profiler's share of the convolutions (and the FC layers' GEMMs) in the
    channels_last forward, with its five costliest ops."""
    from torch.profiler import ProfilerActivity, profile

    model = build_model(args)
    net, q = model.dense(), args.scales[0]
    x = torch.rand(2, 3, q, q * 4 // 3)
    gflop = 2 * net.flops(q, q * 4 // 3, layer="fc7") / 1e9
    layouts = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    best = dict.fromkeys(layouts, np.inf)
    with torch.inference_mode():
        for r in range(reps + 1):  # the first round warms up
            for name, fmt in layouts.items():
                net.to(memory_format=fmt)
                v = x.contiguous(memory_format=fmt)
                t0 = time.perf_counter()
                net.forward_layers(v, ("fc7",))
                if r:
                    best[name] = min(best[name], time.perf_counter() - t0)
        net.to(memory_format=torch.channels_last)
        v = x.contiguous(memory_format=torch.channels_last)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net.forward_layers(v, ("fc7",))
        # fc6 on the pool5 map, batch 4 images x 2 flips: oneDNN's 7x7 conv against the GEMM
        [p5] = net.forward_layers(torch.cat([v] * 4), ("pool5",))
        fc6 = {
            "conv": lambda: torch.nn.functional.conv2d(p5, net._fc6_kernel(p5), net.fc6.bias),
            "gemm": lambda: net._fc(p5, net.fc6, net.kernel),
        }
        fc6_best = dict.fromkeys(fc6, np.inf)
        for r in range(reps + 1):
            for name, fn in fc6.items():
                t0 = time.perf_counter()
                fn()
                if r:
                    fc6_best[name] = min(fc6_best[name], time.perf_counter() - t0)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    conv = sum(t for k, t in ops.items() if "conv" in k.lower() or k in ("aten::addmm", "aten::mm"))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:5]
    return {
        "gflop": gflop,
        **{f"{k}_gflops": gflop / t for k, t in best.items()},
        **{f"{k}_fraction_of_fp32_peak": gflop / t / peak for k, t in best.items()},
        "conv_share_of_cpu_time": conv / total,
        "top_ops": [[k, t / total] for k, t in top],
        "fc6_seconds": fc6_best,
        "fc6_pool5_shape": list(p5.shape),
        "threads": torch.get_num_threads(),
    }


def rows_to_run(args) -> list[tuple[str, str, str]]:
    """(row name, side, precision asked) of every row."""
    rows = [(f"vggfeat {p}", "vggfeat", p) for p in dict.fromkeys(["fp32", *args.precision])]
    rows += [("vggfeat fp32, 2 workers", "vggfeat-workers", "fp32"), ("naive loop", "naive", "fp32")]
    if args.width == 1 and args.fc_dim == 4096 and args.model in ("A", "B", "D", "E"):
        rows += [("timm fp32", "timm", "fp32")]
        rows += [("timm autocast", "timm-autocast", "bf16")] if "bf16" in args.precision else []
    return rows


RATIOS = [
    ("vggfeat fp32", "naive loop"), ("vggfeat fp32", "timm fp32"), ("vggfeat auto", "vggfeat fp32"),
    ("vggfeat auto", "timm autocast"), ("vggfeat auto", "timm fp32"), ("vggfeat bf16", "vggfeat fp32"),
    ("timm autocast", "timm fp32"), ("vggfeat fp32, 2 workers", "vggfeat fp32"),
]  # fmt: skip


def main(args) -> dict:
    if args.run == "probe":
        peak = matmul_peak_gflops("cpu")
        probe = layout_probe(args, peak) | {"fp32_gemm_peak_gflops": peak}
        print(json.dumps(probe, indent=1))
        return probe
    out = Path(args.out_dir)
    paths = make_images(out / "images", args.images)
    (out / "paths.json").write_text(json.dumps(paths))
    device = str(default_device(args.device))
    base = [sys.executable, __file__, "--model", args.model, "--width", str(args.width)]
    base += ["--fc-dim", str(args.fc_dim), "--scales", *map(str, args.scales), "--device", device]
    base += ["--paths", str(out / "paths.json"), "--repeat", str(args.repeat)]
    base += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    peaks = {p: matmul_peak_gflops(device, dtype=DTYPES[p]) for p in ("fp32", "bf16")}
    gflop = total_gflops(build_model(args), paths, args.scales)
    res = {}
    for name, side, asked in rows_to_run(args):
        ran = resolve(asked, device).name if side.startswith("vggfeat") else asked
        npy = out / f"{side}-{asked}.npy"
        cmd = base + ["--side", side, "--precision", asked, "--out", str(npy)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"{name} run failed:\n{r.stderr[-3000:]}")
        row = res[name] = json.loads(r.stdout.strip().splitlines()[-1]) | {"precision": ran, "asked": asked}
        row["gflops_per_s"] = gflop / row["seconds"]
        row["fraction_of_own_peak"] = row["gflops_per_s"] / peaks.get(ran, peaks["fp32"])
        X, ref = np.load(npy), np.load(out / "vggfeat-fp32.npy")
        row["min_cosine_to_vggfeat_fp32"] = float((X * ref).sum(1).min())
        row["max_abs_diff_to_vggfeat_fp32"] = float(np.abs(X - ref).max())
    ratios = {}
    for a, b in RATIOS:
        if a in res and b in res:
            ratios[f"{a} / {b}"] = res[a]["images_per_s"] / res[b]["images_per_s"]
            ratios[f"{a} / {b}, first call"] = (
                res[a]["first_call_images_per_s"] / res[b]["first_call_images_per_s"]
            )
    probe = layout_probe(args, peaks["fp32"]) if device == "cpu" else None
    auto = resolve("auto", device)
    summary = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "width": args.width,
        "scales": args.scales,
        "images": len(paths),
        "protocol_gflop": gflop,
        "gemm_peak_gflops": peaks,
        "auto": {"precision": auto.name, "reason": auto.reason},
        "ratios": ratios,
        "rows": res,
        "fp32_layout_probe": probe,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(
        f"VGG-{args.model} width {args.width}, Q={args.scales}, {len(paths)} images, {device}, "
        f"{summary['threads']} threads; GEMM peaks: fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} "
        f"GFLOP/s; auto = {auto.name} ({auto.reason})"
    )
    print(
        f"{'':24s} {'prec':>5s} {'img/s':>7s} {'1st call':>8s} {'GFLOP/s':>8s} {'% peak':>7s} {'min cos':>8s}"
    )
    for name, r in res.items():
        print(
            f"{name:24s} {r['precision']:>5s} {r['images_per_s']:7.3f} {r['first_call_images_per_s']:8.3f} "
            f"{r['gflops_per_s']:8.1f} {100 * r['fraction_of_own_peak']:6.1f}% "
            f"{r['min_cosine_to_vggfeat_fp32']:8.5f}"
        )
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    if probe:
        cl = probe["channels_last_fraction_of_fp32_peak"]
        print(
            f"fp32 trunk to fc7 at Q={args.scales[0]}, 2 views: NCHW {probe['nchw_gflops']:.1f} GFLOP/s "
            f"({100 * probe['nchw_fraction_of_fp32_peak']:.0f}% of peak), channels_last "
            f"{probe['channels_last_gflops']:.1f} ({100 * cl:.0f}%); "
            f"convolutions {100 * probe['conv_share_of_cpu_time']:.0f}% of the profiled CPU time"
        )
    return summary


@dataclass(kw_only=True)
class Config:
    model: str = option("D", help="configuration (A, A-LRN, B, C, D, E, ...)")
    width: float = option(1.0, above=0, help="channel multiplier; 0.25 for a quick run")
    fc_dim: int = option(4096, at_least=1, help="fc6/fc7 width")
    scales: list[int] = option([256, 384, 512], at_least=1, help="smallest sides Q")
    images: int = option(8, at_least=1, help="number of VOC-like images of mixed sizes")
    batch_size: int | None = option(
        None, help="images per network run of vggfeat.extract (default: sized to fit)"
    )
    device: str | None = option(None, help="cpu, cuda ... (default: cuda if available, else cpu)")
    precision: list[str] = option(
        ["fp32", "bf16", "auto"],
        choices=list(PRECISIONS),
        help="the precisions of the vggfeat rows (fp32 always runs: the reference)",
    )
    repeat: int = option(2, help="warm calls per row after the first; the fastest is its throughput")
    run: Literal["all", "probe"] = option(
        "all", help="all: every row, then the fp32 probe; probe: only the probe (NCHW vs channels_last, fc6)"
    )
    out_dir: str = option("runs/extract_throughput", help="images, descriptors and results.json")


@dataclass(kw_only=True)
class Side(Config):
    """One side's measuring process, which ``main`` starts with the run's options and these."""

    side: Side_ | None = option(None, help="which implementation to time")
    paths: str | None = option(None, help="JSON list of the images")
    out: str | None = option(None, help=".npy of the descriptors")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    # the measuring processes' own flags: not options of the user's
    p.add_argument("--side", choices=typing.get_args(Side_), help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    a = from_args(Side, get_args_parser().parse_args())
    if a.side:
        print(json.dumps(worker(a)))
    else:
        main(a)
