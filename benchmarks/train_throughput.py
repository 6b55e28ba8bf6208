"""Training images/s: the vggfeat trainer's step vs a plain torchvision loop, and GFLOP/s vs the
measured fp32 matmul peak. Results go in recipes/README.md ("Throughput").

    python benchmarks/train_throughput.py --config A --batch 16 --size 224
"""

from __future__ import annotations

import argparse
import json

from vggfeat.train.throughput import compare


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="A", choices=["A", "B", "D", "E"], help="torchvision has A, B, D, E")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    return p


def main(args: argparse.Namespace) -> None:
    res = compare(
        config=args.config,
        num_classes=args.num_classes,
        batch=args.batch,
        size=args.size,
        warmup=args.warmup,
        steps=args.steps,
    )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
