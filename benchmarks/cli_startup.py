"""What `vggfeat extract` costs from the shell against the same work in a warm process.

    python benchmarks/cli_startup.py                       # 100 small images, 1 compute thread
    python benchmarks/cli_startup.py --images 1000 --threads 2

On the same images, with the same net, scales and thread count: the command's wall time (a
fresh interpreter: imports, parser, net, decoding workers, first-call kernel selection, writing
the .npy), the import of `vggfeat.cli` alone in a fresh interpreter, and in this process the
first and a second (warm) extraction. The net is the demo's (narrow VGG-A at crop 64, random
weights) unless --weights is given. Writes runs/cli_startup/results.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vggfeat.options import add_options, from_args, option


@dataclass(kw_only=True)
class Config:
    images: int = option(100, at_least=1, help="small images written for the run")
    size: tuple[int, int] = option((128, 144), help="their height and width")
    weights: Path | None = option(None, help="a weights file (default: the demo's net, random weights)")
    threads: int = option(1, at_least=1, help="torch compute threads, on both sides")
    out: Path = Path("runs/cli_startup")


def make_images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    for i in range(n):
        small = rng.integers(0, 256, (h // 12 + 1, w // 12 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"{i:04d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(cfg: Config) -> dict:
    import torch

    import vggfeat

    cfg.out.mkdir(parents=True, exist_ok=True)
    files = make_images(cfg.out / "images", cfg.images, cfg.size)
    weights = cfg.weights or vggfeat.save_weights(
        vggfeat.vgg("A", width=1 / 8, fc_dim=256, crop=64, num_classes=24), cfg.out / "demo_net.safetensors"
    )
    py = sys.executable
    cli = [py, "-m", "vggfeat.cli", "extract", str(cfg.out / "images"), "--weights", str(weights)]
    cli += ["--threads", str(cfg.threads), "--quiet", "--out", str(cfg.out / "cli.npy")]
    times = {"cli_wall_s": wall(cli), "import_wall_s": wall([py, "-c", "import vggfeat.cli"])}
    torch.set_num_threads(cfg.threads)
    ext = vggfeat.Extractor(vggfeat.vgg(weights=str(weights)), progress=False)
    for key in ("first_call_s", "warm_call_s"):
        t0 = time.perf_counter()
        X = ext(files)
        times[key] = time.perf_counter() - t0
    import numpy as np

    same = bool(np.allclose(np.load(cfg.out / "cli.npy"), X, atol=1e-5))
    res = {"config": asdict(cfg), "torch_threads": torch.get_num_threads(), "same_features": same, **times}
    res["cli_over_warm"] = times["cli_wall_s"] / times["warm_call_s"]
    res["warm_ms_per_image"] = 1000 * times["warm_call_s"] / len(files)
    (cfg.out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"{len(files)} images {cfg.size[0]}x{cfg.size[1]}, {cfg.threads} compute thread(s)")
    for k in ("cli_wall_s", "import_wall_s", "first_call_s", "warm_call_s"):
        print(f"  {k:16s} {times[k]:7.2f}")
    print(
        f"  CLI / warm       {res['cli_over_warm']:7.1f}x   warm {res['warm_ms_per_image']:.1f} ms per image"
    )
    return res


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


if __name__ == "__main__":
    main(from_args(Config, get_args_parser().parse_args()))
