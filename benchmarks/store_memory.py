"""Peak memory of extraction into a feature store, against the number of images.

    python benchmarks/store_memory.py                      # 1,000 vs 10,000 images
    python benchmarks/store_memory.py --sizes 500 2000     # quick

Writes N small PNGs (32x32 by default) into a temporary folder, then for each N runs, in a
fresh process, ``vggfeat.extract`` of the first N files with a narrow net (VGG-A, width 1/16,
fc 32, trained crop 32) at one scale into a new store ("cold": every row computed and
written), then again ("warm": every row read back from the store). Decoding stays in the
process (``num_workers=0``) so that ``ru_maxrss`` covers all of it; the peak before the first
extraction (libraries and the net) is reported too, so the extraction's own share is visible.
The store's promise is that memory is flat in N: only the (N, D) result and the images' keys
grow with N.
Prints one table and writes runs/store_memory/results.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggfeat.options import add_options, from_args, option


def make_images(folder: Path, n: int, side: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def child(folder: str, n: int, store: str, side: int) -> None:
    """One measured run: prints a JSON line with the seconds and peak RSS of each pass."""
    import torch

    import vggfeat

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10, crop=32).eval()
    files = sorted(Path(folder).iterdir())[:n]
    rss = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out = {"n": n, "base_rss_mb": rss()}  # libraries and the net, before any extraction
    for name in ("cold", "warm"):
        t = time.perf_counter()
        X = vggfeat.extract(files, model=net, scales=(side,), cache=store, num_workers=0, progress=False)
        out[f"{name}_s"] = round(time.perf_counter() - t, 1)
        out[f"{name}_rss_mb"] = rss()
    assert X.shape == (n, 32) and not np.isnan(X).any()
    print(json.dumps(out))


@dataclass(kw_only=True)
class Config:
    sizes: list[int] = option([1000, 10000], at_least=1, help="numbers of images")
    side: int = option(32, at_least=32, help="image side in pixels (>= 32)")
    out: Path = option(Path("runs/store_memory"), help="folder of results.json")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    # the measuring process this script starts for each size: not an option of the user's
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "STORE"), help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    parsed = get_args_parser().parse_args(argv)
    args = from_args(Config, parsed)
    if parsed.child:
        return child(parsed.child[0], int(parsed.child[1]), parsed.child[2], args.side)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        make_images(images, max(args.sizes), args.side)
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--side", str(args.side), "--child", str(images), str(n)]
            r = subprocess.run([*cmd, str(Path(tmp) / f"store{n}")], capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(
        "| images | RSS before MB | cold s | peak RSS cold MB | warm s | peak RSS warm MB | extraction MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["extraction_mb"] = round(r["warm_rss_mb"] - r["base_rss_mb"], 1)
        print(
            f"| {r['n']:,} | {r['base_rss_mb']} | {r['cold_s']} | {r['cold_rss_mb']} | {r['warm_s']} "
            f"| {r['warm_rss_mb']} | {r['extraction_mb']} |"
        )
    if len(rows) > 1:
        print(f"peak RSS, largest vs smallest N: {rows[-1]['warm_rss_mb'] / rows[0]['warm_rss_mb'] - 1:+.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
