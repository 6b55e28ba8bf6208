"""Throughput of vggfeat.extract against a naive torchvision implementation, in one run.

    python benchmarks/extract_throughput.py                      # net D, 8 VOC-like images
    python benchmarks/extract_throughput.py --width 0.25 --images 16   # quick
    python benchmarks/extract_throughput.py --device cuda        # GPU (bf16, channels_last)

Both sides compute the same appendix-B descriptor (dense fc7 at Q = 256, 384, 512, global
average pooling, flip average, mean over scales, L2) on the same images of mixed sizes
(500x375, 375x500 and others, as VOC). The naive side is what a user would write: a loop over
images, scales and flips, PIL + torchvision transforms, NCHW, eager, one image per forward.
Each side runs in its own process so its peak RSS is its own. GFLOP/s counts convs and
FC-as-conv layers; the peak is this machine's fp32 matmul rate, measured here.
Writes runs/extract_throughput/results.json and prints one table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vggfeat.options import add_options, from_args, option
from vggfeat.train.throughput import matmul_peak_gflops

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


def naive(model, paths, scales, device):
    """The per-image loop a user would write with torchvision."""
    from PIL import Image
    from torchvision import transforms as T

    pre = model.preprocess
    model = model.to(device)
    fc6, fc7 = model.classifier[0], model.classifier[3]
    norm = T.Normalize(pre.mean, pre.std)
    rows = []
    with torch.no_grad():
        for p in paths:
            img = Image.open(p).convert("RGB")
            descs = []
            for q in scales:
                x = norm(T.ToTensor()(T.Resize(q)(img)))[None].to(device)
                for v in (x, torch.flip(x, dims=[3])):
                    f = model.features(v)
                    h = torch.relu(
                        torch.nn.functional.conv2d(f, fc6.weight.view(-1, f.shape[1], 7, 7), fc6.bias)
                    )
                    h = torch.relu(torch.nn.functional.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))
                    descs.append(h.mean(dim=(2, 3))[0])
            d = torch.stack(descs).view(len(scales), 2, -1).mean(1).mean(0)
            rows.append((d / d.norm()).cpu().numpy())
    return np.stack(rows)


def worker(args) -> dict:
    import vggfeat

    paths = json.loads(Path(args.paths).read_text())
    model = build_model(args)
    run = lambda: (
        naive(model, paths, args.scales, args.device)
        if args.side == "naive"
        else vggfeat.extract(
            paths,
            model=model,
            scales=args.scales,
            device=args.device,
            batch_size=args.batch_size,
            progress=False,
        )
    )
    run_small = paths[:1]
    if args.side == "vggfeat":  # warm-up: thread pools, oneDNN primitives
        vggfeat.extract(run_small, model=model, scales=args.scales, device=args.device, progress=False)
    else:
        naive(model, run_small, args.scales, args.device)
    t0 = time.perf_counter()
    X = run()
    secs = time.perf_counter() - t0
    np.save(args.out, np.asarray(X))
    return {
        "side": args.side,
        "seconds": secs,
        "images_per_s": len(paths) / secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def total_gflops(model, paths, scales) -> float:
    """Forward FLOPs of the whole protocol: every image, scale and flip, up to fc7."""
    from vggfeat.data.decode import image_size, resized_size

    net = model.dense()
    return (
        sum(2 * net.flops(*resized_size(*image_size(p), q), layer="fc7") for p in paths for q in scales) / 1e9
    )


def main(args) -> dict:
    out = Path(args.out_dir)
    paths = make_images(out / "images", args.images)
    (out / "paths.json").write_text(json.dumps(paths))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--width",
        str(args.width),
        "--fc-dim",
        str(args.fc_dim),
        "--scales",
        *map(str, args.scales),
        "--device",
        device,
        "--paths",
        str(out / "paths.json"),
    ] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    res = {}
    for side in ("naive", "vggfeat"):
        r = subprocess.run(
            base + ["--side", side, "--out", str(out / f"{side}.npy")],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            raise SystemExit(f"{side} run failed:\n{r.stderr[-3000:]}")
        res[side] = json.loads(r.stdout.strip().splitlines()[-1])
    diff = float(np.abs(np.load(out / "naive.npy") - np.load(out / "vggfeat.npy")).max())
    gflop = total_gflops(build_model(args), paths, args.scales)
    peak = matmul_peak_gflops(device)
    for side in res.values():
        side["gflops_per_s"] = gflop / side["seconds"]
        side["fraction_of_matmul_peak"] = side["gflops_per_s"] / peak
    summary = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "width": args.width,
        "scales": args.scales,
        "images": len(paths),
        "protocol_gflop": gflop,
        "matmul_peak_gflops": peak,
        "max_abs_diff": diff,
        "speedup": res["vggfeat"]["images_per_s"] / res["naive"]["images_per_s"],
        **res,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(
        f"VGG-{args.model} width {args.width}, Q={args.scales}, {len(paths)} images, {device}, "
        f"{summary['threads']} threads; fp32 matmul peak {peak:.0f} GFLOP/s"
    )
    print(f"{'':10s} {'img/s':>8s} {'GFLOP/s':>9s} {'% peak':>7s} {'peak RSS MB':>12s}")
    for name in ("naive", "vggfeat"):
        r = res[name]
        print(
            f"{name:10s} {r['images_per_s']:8.3f} {r['gflops_per_s']:9.1f} "
            f"{100 * r['fraction_of_matmul_peak']:6.1f}% {r['peak_rss_mb']:12.0f}"
        )
    print(f"speed-up {summary['speedup']:.2f}x; max |difference| of descriptors {diff:.2e}")
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
    out_dir: str = option("runs/extract_throughput", help="images, descriptors and results.json")


@dataclass(kw_only=True)
class Side(Config):
    """One side's measuring process, which ``main`` starts with the run's options and these."""

    side: Literal["naive", "vggfeat"] | None = option(None, help="which implementation to time")
    paths: str | None = option(None, help="JSON list of the images")
    out: str | None = option(None, help=".npy of the descriptors")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    # the measuring processes' own flags: not options of the user's
    p.add_argument("--side", choices=["naive", "vggfeat"], help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    a = from_args(Side, get_args_parser().parse_args())
    if a.side:
        print(json.dumps(worker(a)))
    else:
        main(a)
