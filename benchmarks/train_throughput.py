"""Training images/s: the vggfeat trainer's step in fp32 and under Accelerate's bf16 mixed
precision vs a plain torchvision loop, GFLOP/s vs the GEMM peak of each precision measured in
the same run, and a short loss-curve parity check (both precisions train the same net on the
same batch). Results go in recipes/README.md and benchmarks/README.md ("Precision").

    python benchmarks/train_throughput.py --config A --batch 16 --size 224
    python benchmarks/train_throughput.py --config A --batch 4 --size 64 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

from vggfeat.options import add_options, from_args, option
from vggfeat.train.throughput import compare


@dataclass(kw_only=True)
class Config:
    config: Literal["A", "B", "D", "E"] = option("A", help="torchvision has A, B, D, E")
    num_classes: int = option(1000, at_least=2, help="classes of the last layer")
    batch: int = option(16, at_least=1, help="images per training step")
    size: int = option(224, at_least=32, help="image side in pixels")
    warmup: int = option(2, at_least=0, help="steps run before timing")
    steps: int = option(5, at_least=1, help="timed steps")
    parity_steps: int = option(6, at_least=1, help="steps of the loss-curve parity check")
    precision: list[str] = option(
        ["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="the precisions measured, fp32 first (bf16: Accelerate's mixed precision)",
    )


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def main(cfg: Config) -> None:
    kw = dataclasses.asdict(cfg)
    kw["precisions"] = tuple(dict.fromkeys(["fp32", *kw.pop("precision")]))  # fp32: the reference
    res = compare(**kw)
    print(json.dumps(res, indent=1, default=lambda v: round(v, 4)))


if __name__ == "__main__":
    main(from_args(Config, get_args_parser().parse_args()))
