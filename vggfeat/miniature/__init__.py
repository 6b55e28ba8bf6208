"""The paper in miniature: the findings of Sec. 4 and appendix B measured on :mod:`vggfeat.toy`
data and judged against the paper's numbers.

1. data: the toy source set (24 classes) with a third split, ``holdout/``, that the trainer
   validates on (every net anneals, cosine to lr/100), so that nothing is tuned on ``val/``,
   the split every verdict uses;
   and the toy VOC2007 target;
2. train (in this process, through :func:`vggfeat.train.train`, so ``accelerate launch`` spreads
   it over GPUs) narrow nets of one width at crop c, with the paper's geometry and scale ratios
   (S = 256c/224 fixed, or S in [256, 512]c/224): A and A-LRN from random init (as the
   trainer's A-LRN-256 preset: A's weights would add A's training to the LRN comparison);
   B, C, D, E from A by Sec. 3.1's layer copy; C, D, E jittered by fine-tuning all layers of
   their fixed-S net at lr/10 (and D fine-tuned for as long at fixed S, the control that
   separates jittering from more training); B-5x5 from random init for as many epochs as A
   and B together (its 5x5 convs cannot take A's 3x3 ones);
3. evaluate on ``val/``: Table 3 (dense, one Q), Table 4 (dense, three Q), Table 5 (jittered D
   and E: dense vs multi-crop at the net's own crop vs both), Table 6 (fusion of D and E); then Table 11: the
   appendix-B descriptors of D, E, D & E (and A, the shallow reference) on the toy VOC target;
4. judge each claim (:data:`verdicts.CLAIMS`) with :mod:`vggfeat.stats` (paired t for two readings
   of the same nets, Welch's t for different nets, TOST for the claim of no effect, each with a
   bootstrap over the evaluated images; Holm-adjusted p over the claims) and write
   ``report.md``, ``results.json`` and PNG plots.

Every trained net is stamped with its resolved config and start weights: a rerun reuses it, an
interrupted one resumes from its last checkpoint. Posteriors and descriptors are cached too.

Modules: :mod:`.runs` (options, plan, data, training), :mod:`.measure` (posteriors, transfer),
:mod:`.verdicts` (claims and their judging), :mod:`.report`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from .measure import classification, transfer
from .report import report, tables
from .runs import QUICK, MiniatureConfig, Net, plan, prepare_data, train_net
from .verdicts import CLAIMS, Claim, judge

__all__ = ["CLAIMS", "QUICK", "Claim", "MiniatureConfig", "Net", "judge", "plan", "run"]


def run(cfg: MiniatureConfig | None = None) -> dict:
    """Every step in order; returns the results (also in ``<out>/results.json``)."""
    from ..distributed import process_state
    from ..evaluate import labels_of

    cfg = cfg or MiniatureConfig()
    cfg = replace(cfg, out=Path(cfg.out).resolve())  # the trainer runs with paths of its own
    seconds: dict[str, float] = {}
    t = time.time()
    with process_state().main_process_first():  # one rank writes the data, the others reuse it
        source, devkit = prepare_data(cfg)
    seconds["data"] = time.time() - t
    nets, weights = plan(cfg), {}
    for net in nets:
        t = time.time()
        weights[net.name] = train_net(cfg, net, source)
        seconds[f"train {net.name}"] = time.time() - t
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
        tables=tables(cfg, nets, systems, tsys, chance), seconds=seconds,
    )  # fmt: skip
    if process_state().is_main_process:
        report(cfg, results)
    return results
