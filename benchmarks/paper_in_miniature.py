"""The paper in miniature: every finding of Sec. 4 and appendix B trained, measured and judged on
the toy data (see vggfeat/miniature for the plan of runs and benchmarks/README.md for results).

    python benchmarks/paper_in_miniature.py --out runs/miniature         # under an hour on 2 CPU cores
    python benchmarks/paper_in_miniature.py --quick --out /tmp/mini     # smoke test, numbers meaningless
    accelerate launch benchmarks/paper_in_miniature.py --width 0.5 --fc-dim 1024   # GPUs

Writes <out>/report.md, results.json, claims.png, table3.png, protocols.png, transfer.png; a rerun reuses
every trained net, posterior and descriptor whose inputs are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import typing
from dataclasses import fields, replace
from pathlib import Path

from vggfeat.miniature import QUICK, MiniatureConfig, run


def _option(hint) -> dict:
    """argparse keywords for a MiniatureConfig field's type."""
    if hint is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if typing.get_origin(hint) is tuple:
        return dict(nargs="+", type=typing.get_args(hint)[0])
    return dict(type=hint)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, width 1/16: a smoke test")
    hints = typing.get_type_hints(MiniatureConfig)
    for f in fields(MiniatureConfig):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            default=None,
            help=f"{f.metadata['help']} (default {f.default!r}; --quick: {getattr(QUICK, f.name)!r})",
            **_option(hints[f.name]),
        )
    return p


def config_from_args(args: argparse.Namespace) -> MiniatureConfig:
    given = {
        f.name: getattr(args, f.name) for f in fields(MiniatureConfig) if getattr(args, f.name) is not None
    }
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    return replace(QUICK if args.quick else MiniatureConfig(), **given)


def main(argv=None) -> dict:
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    cfg = config_from_args(get_args_parser().parse_args(argv))
    results = run(cfg)
    if main_process:
        print((Path(cfg.out) / "report.md").read_text())
    return results


if __name__ == "__main__":
    main()
