"""Training images/s: the vggfeat trainer's step vs a plain torchvision loop, and GFLOP/s vs the
measured fp32 matmul peak. Results go in recipes/README.md ("Throughput").

    python benchmarks/train_throughput.py --config A --batch 16 --size 224
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


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def main(cfg: Config) -> None:
    res = compare(**dataclasses.asdict(cfg))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main(from_args(Config, get_args_parser().parse_args()))
