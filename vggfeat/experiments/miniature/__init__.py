"""The paper in miniature: the findings of Sec. 4 and appendix B measured on :mod:`vggfeat.toy`
data and judged against the paper's numbers.

1. data: the toy source set (24 classes, few training images per class, each with objects of
   other classes behind the labelled one, so that the nets stay off the ceiling) with a third
   split, ``holdout/``, that the trainer validates on, so that nothing is tuned on ``val/``, the
   split every verdict uses; and the toy VOC2007 target;
2. train narrow nets of one width at crop c, with the paper's geometry and scale ratios
   (S = 256c/224 fixed, or S in [256, 512]c/224), without batch norm as the paper's nets: A,
   A-LRN, B, B-5x5 (Sec. 4.1's shallow control of B), C and D at fixed S, E at fixed S and C,
   D, E jittered (see :func:`.runs.plan`): A, A-LRN, B and B-5x5 from random weights (Glorot
   with the ReLU gain), C, D, E and a second B from A (Sec. 3.1), all for the same epochs on
   the same annealing schedule, and the jittered nets against fixed-S controls fine-tuned as
   long from the same start, so that two nets compared differ in one factor only: no net has had
   more training than the one it is compared with. Nets whose start is made train two side by
   side on CPU; under ``accelerate launch`` each is spread over the processes;
3. evaluate on ``val/``: Table 3 (dense, one Q), Table 4 (dense, three Q), Table 5 (jittered D
   and E: dense vs multi-crop at the net's own crop vs both), Table 6 (fusion of D and E); then
   Table 11: the appendix-B descriptors of D, E, D & E (and A, the shallow reference) on the
   toy VOC target;
4. judge each claim (:data:`verdicts.CLAIMS`, each naming the one factor its two systems differ
   in) with :mod:`vggfeat.stats` (paired t for two readings of the same nets, Welch's t for
   different nets, TOST with a margin fixed before the run for the claims of no effect, each
   with a bootstrap over the evaluated images; Holm-adjusted p over the claims) and write
   ``report.md``, ``results.json`` and PNG plots, the training curves of every net among them.

The output folder is stamped with the options the results depend on (another run's folder is
refused); every trained net with its resolved config: a rerun reuses it, an interrupted one
resumes from its last checkpoint. Posteriors and descriptors are cached too.

Modules: :mod:`.runs` (options, plan, data, training), :mod:`.measure` (posteriors, transfer),
:mod:`.verdicts` (claims and their judging), :mod:`.report`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from ...evaluation.posteriors import labels_of
from ...features.distributed import process_state
from .measure import classification, transfer
from .report import final_errors, report, tables
from .runs import QUICK, MiniatureConfig, Net, check, plan, prepare_data, stamp_folder, train_all
from .verdicts import CLAIMS, Claim, judge

__all__ = ["CLAIMS", "QUICK", "Claim", "MiniatureConfig", "Net", "check", "judge", "plan", "run"]


def run(cfg: MiniatureConfig | None = None) -> dict:
    """Every step in order; returns the results (also in ``<out>/results.json``)."""

    cfg = cfg or MiniatureConfig()
    cfg = replace(cfg, out=Path(cfg.out).resolve())  # the trainer runs with paths of its own
    seconds: dict[str, float] = {}
    t = time.time()
    check(cfg)
    with process_state().main_process_first():  # one rank writes the data, the others reuse it
        if process_state().is_main_process:
            stamp_folder(cfg)
        source, devkit = prepare_data(cfg)
    seconds["data"] = time.time() - t
    nets, t = plan(cfg), time.time()
    trained = train_all(cfg, nets, source)
    weights = {name: w for name, (w, _) in trained.items()}
    seconds |= {f"train {name}": s for name, (_, s) in trained.items()}
    seconds["training wall"] = time.time() - t
    t = time.time()
    images, y, _ = labels_of(source / "val")
    systems = classification(cfg, nets, weights, images, y)
    seconds["evaluate"] = time.time() - t
    t = time.time()
    tsys, test_labels, chance = transfer(cfg, weights, devkit)
    seconds["transfer"] = time.time() - t
    claims = judge({**systems, **tsys}, test_labels=test_labels, n_boot=cfg.bootstrap)
    results = dict(
        config=json.loads(json.dumps(asdict(cfg), default=str)), n_val=len(y), claims=claims,
        nets=[n.name for n in nets], final_holdout_err=final_errors(cfg, nets),
        tables=tables(cfg, nets, systems, tsys, chance), seconds=seconds,
    )  # fmt: skip
    if process_state().is_main_process:
        report(cfg, results)
    return results
