"""The paper in miniature: every finding of Sec. 4 and appendix B trained, measured and judged on
the toy data (see vggfeat/miniature for the plan of runs and benchmarks/README.md for results).

    python benchmarks/paper_in_miniature.py --out runs/miniature         # about 51 min on 2 CPU cores
    python benchmarks/paper_in_miniature.py --quick --out /tmp/mini     # smoke test, numbers meaningless
    accelerate launch benchmarks/paper_in_miniature.py --width 0.5 --fc-dim 1024   # GPUs

Writes <out>/report.md, results.json, claims.png, table3.png, protocols.png, transfer.png; a rerun reuses
every trained net, posterior and descriptor whose inputs are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from vggfeat import options
from vggfeat.experiments.miniature import QUICK, MiniatureConfig, check, run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, width 1/16: a smoke test")
    options.add_options(p, MiniatureConfig)
    return p


def config_from_args(args: argparse.Namespace) -> MiniatureConfig:
    return options.from_args(MiniatureConfig, args, QUICK if args.quick else MiniatureConfig())


def main(argv=None) -> dict:
    main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    parser = get_args_parser()
    cfg = config_from_args(parser.parse_args(argv))
    try:
        check(cfg)
    except ValueError as e:
        parser.error(str(e))
    results = run(cfg)
    if main_process:
        print((Path(cfg.out) / "report.md").read_text())
    return results


if __name__ == "__main__":
    main()
