"""The report of the paper in miniature: Tables 3-6 and 11 beside the paper's, the claims with
their verdicts (``report.md``, ``results.json``) and three PNG plots."""

from __future__ import annotations

import json

import numpy as np

from ...evaluation import paper as published
from ...evaluation import plots, stats
from ...evaluation.chance import chance_topk
from ...evaluation.plots import markdown_table
from .. import toy
from .measure import eval_scales
from .runs import MiniatureConfig, Net, kind

RESULTS = ("table3", "table4", "table5", "table6", "table11")
SHOWN = {"multi": "dense", "multicrop": "multi-crop", "both": "dense & multi-crop"}


def _ms(rs: list[dict], key: str = "value") -> list:
    """[mean, std over seeds (None for one seed), seeds]."""
    s = stats.per_seed([r[key] for r in rs])
    n = len(s["per_seed"])
    return [s["mean"], s["std"] if n > 1 else None, n]


def _row(systems: dict, key: tuple, **about) -> dict:
    return dict(**about, top1=_ms(systems[key]), top5=_ms(systems[key], "top5"))


PAPER_T3 = {f"{net}-fixed": e for net, e in published.ILSVRC_FIXED.items()}  # the fixed-S nets' kinds
PAPER_T11 = {
    net: published.VOC_MAP[row][2007]
    for net, row in {"D": "VGG Net-D", "E": "VGG Net-E", "D&E": "VGG Net-D & Net-E"}.items()
}


def tables(cfg: MiniatureConfig, nets: list[Net], systems: dict, tsys: dict, chance) -> dict:
    """Tables 3-6 (top-1 / top-5 error %) and 11 (mAP %) as rows; every number is [mean, std
    or None, seeds]; ``paper``: the paper's pair (top-1 / top-5) or mAP where it has one."""
    t: dict = {n: [] for n in RESULTS}
    for k, net in {kind(n.name): n for n in nets}.items():
        qs, q = eval_scales(cfg, net)
        s = list(cfg.jitter()) if net.jitter else cfg.fixed_s()

        def paper(p, net=net, k=k):
            return (
                published.ILSVRC_JITTERED[p].get(net.config)
                if net.jitter
                else PAPER_T3.get(k)
                if p == "single"
                else None
            )

        t["table3"].append(_row(systems, (k, "single"), net=k, S=s, Q=q, paper=paper("single")))
        if (k, "multi") in systems:
            t["table4"].append(_row(systems, (k, "multi"), net=k, S=s, Q=list(qs), paper=paper("multi")))
        if (k, "both") in systems:
            for p in ("multi", "multicrop", "both"):
                t["table5"].append(
                    _row(systems, (k, p), net=k, protocol=SHOWN[p], Q=list(qs), paper=paper(p))
                )
    if ("D&E-jitter", "fusion") in systems:
        about = dict(
            net="D & E jittered, dense & multi-crop", paper=published.ILSVRC_JITTERED["fusion"]["D&E"]
        )
        t["table6"].append(_row(systems, ("D&E-jitter", "fusion"), **about))
    for n in ("A", "B-fromA", "D-fixed", "D", "E", "D&E"):
        if (n, "transfer") in tsys:
            t["table11"].append(dict(net=n, map=_ms(tsys[(n, "transfer")]), paper=PAPER_T11.get(n)))
    t["chance_map"] = [100 * chance[0], 100 * chance[1]]
    return t


def _fmt(m: list) -> str:
    mean, std, n = m
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f} ({n})"


def _paper(p) -> str:
    if p is None:
        return "-"
    return " / ".join(f"{v:.1f}" for v in p) if isinstance(p, (tuple, list)) else str(p)


def _table(rows: list[dict], columns: dict) -> str:

    return markdown_table(list(columns), [[f(r) for f in columns.values()] for r in rows])


ERRORS = {"top-1 %": lambda r: _fmt(r["top1"]), "top-5 %": lambda r: _fmt(r["top5"])}
PAPER_ERR = {"paper top-1 / top-5": lambda r: _paper(r["paper"])}
NET_S_Q = {"net": lambda r: r["net"], "S": lambda r: r["S"], "Q": lambda r: r["Q"]}
CLAIM_COLUMNS = {
    "claim": lambda c: c["claim"],
    "differs in": lambda c: c["differs"],
    "paper": lambda c: (
        " vs ".join(f"{v:.1f}" for v in c["paper"]) if isinstance(c["paper"], list) else c["paper"]
    ),
    "paper gain": lambda c: "-" if c["paper_gain"] is None else f"{c['paper_gain']:+.1f}",
    "ours, per seed": lambda c: f"{_seeds(c['per_seed'][0])} vs {_seeds(c['per_seed'][1])} ({c['unit']})",
    "gain [95% interval]": lambda c: f"{c['effect']:+.1f} [{_num(c['ci95'][0])}, {_num(c['ci95'][1])}]",
    "p (Holm)": lambda c: f"{_p(c['p'])} ({_p(c['p_holm'])})",
    "test": lambda c: c["test"],
    "verdict": lambda c: f"**{c['verdict']}**",
}


def _seeds(values: list) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _num(v) -> str:
    return "-" if v is None or np.isnan(v) else f"{v:+.1f}"


def _p(v) -> str:
    return "-" if v is None or np.isnan(v) else f"{v:.2g}"


def markdown(cfg: MiniatureConfig, results: dict) -> str:
    t, k = results["tables"], len(toy.SOURCE_CLASSES)
    lo, hi = cfg.jitter()
    bn = "batch norm after every conv" if cfg.batch_norm else "no batch norm (as the paper's nets)"
    md = (
        "# The paper in miniature (toy data, narrow nets)\n\n"
        f"Every net: width {cfg.width:g}, fc {cfg.fc_dim}, crop {cfg.crop}, {bn}, no dropout, "
        f"init {cfg.init}; "
        f'S = {cfg.fixed_s()} ("fixed", the paper\'s 256) or S in [{lo}, {hi}] ("jitter", [256, 512]). '
        "A, A-LRN, B and B-5x5 start from random weights; B-fromA, C, D and E from A of the same seed "
        f"(Sec. 3.1); each trains {cfg.epochs} epochs ({cfg.warmup_epochs} of warm-up from lr/10, then "
        f"cosine from lr {cfg.lr:g} to lr/100). The jittered C, D, E and the fixed-S controls "
        f"(fixedft) fine-tune their fixed-S net for {cfg.finetune_epochs} epochs from lr/10. Batch "
        f"{cfg.batch_size}. Two nets compared share start and schedule: they differ only in the factor "
        "the claim names. Source task: toy data seed "
        f"{cfg.data_seed}, {k} classes, "
        f"{cfg.source_train} training images per class, {cfg.distractors} objects of other classes behind "
        f"each labelled one; errors on {results['n_val']} val images "
        f"(chance top-1 {100 * chance_topk(k):.1f}%) that nothing was tuned on (the learning-rate "
        "schedule reads holdout/). Cells: mean ± std (seeds). Training curves of every net (holdout "
        "top-1 error per epoch): ![curves](curves.png)\n\n"
        + nets_table(results)
        + "\n## Table 3: one test scale (dense)\n\n"
        + _table(t["table3"], NET_S_Q | ERRORS | PAPER_ERR)
    )
    md += "\n## Table 4: three test scales (dense)\n\n" + _table(t["table4"], NET_S_Q | ERRORS | PAPER_ERR)
    cols = {"net": lambda r: r["net"], "evaluation": lambda r: r["protocol"]} | ERRORS | PAPER_ERR
    md += "\n## Table 5: dense vs multi-crop vs both (three Q)\n\n" + _table(t["table5"], cols)
    md += "\n## Table 6: fusion\n\n" + _table(t["table6"], {"nets": lambda r: r["net"]} | ERRORS | PAPER_ERR)
    cols = {"descriptor": lambda r: r["net"], "mAP %": lambda r: _fmt(r["map"])}
    md += (
        f"\n## Table 11: transfer to the toy VOC2007 target (chance mAP {t['chance_map'][0]:.1f} ± "
        f"{t['chance_map'][1]:.1f})\n\n"
        + _table(t["table11"], cols | {"paper VOC-2007": lambda r: _paper(r["paper"])})
    )
    n = len(results["claims"])
    md += (
        "\n## Claims\n\nGain: how much the first system beats the second in the paper's direction "
        "(points of top-1 error or mAP), with its 95% interval. Noise: the training seeds (paired t "
        "on the per-seed differences for two readings of the same nets, Welch's t for different "
        "nets) plus a paired bootstrap over the evaluated images; a side with one seed has no "
        "measured training noise, so a comparison of different nets with one seed is not judged. "
        "holds / does not hold: the interval lies above / below 0; inconclusive: it holds 0. "
        "The claim of no effect is a TOST within the margin it states (equivalent, or does not "
        f"hold when the interval excludes 0). {n} claims were tested together: p (Holm) is the "
        "Holm-Bonferroni adjusted p (see vggfeat/stats.py).\n\n"
    )
    md += _table(results["claims"], CLAIM_COLUMNS)
    wall = {n: v for n, v in results["seconds"].items() if not n.startswith("train ")}  # nets: in parallel
    training = wall.get("training wall", 0.0)
    md += (
        f"\nWall time of this invocation {sum(wall.values()) / 60:.1f} min (training {training / 60:.1f}, "
        f"evaluation {wall.get('evaluate', 0) / 60:.1f}, transfer {wall.get('transfer', 0) / 60:.1f}; "
        "reused nets count 0).\n\n"
        "![claims](claims.png)\n![Table 3](table3.png)\n![protocols](protocols.png)\n"
        "![transfer](transfer.png)\n"
    )
    return md


def report(cfg: MiniatureConfig, results: dict) -> None:
    """``report.md``, ``results.json`` and the plots ``claims.png``, ``table3.png``,
    ``protocols.png``, ``transfer.png`` under ``cfg.out``."""

    t = results["tables"]
    plots.write_report(cfg.out, markdown=markdown(cfg, results), payload=results)
    claims_plot(cfg.out / "claims.png", results["claims"])
    curves_plot(cfg.out / "curves.png", cfg.out / "nets", results["nets"])

    def bars(name, rows, key, title, ylabel, references=None):
        label = [r["net"] + (f" {r['protocol']}" if "protocol" in r else "") for r in rows]
        plots.bar_chart(
            cfg.out / name,
            {n: r[key][0] / 100 for n, r in zip(label, rows)},
            errors={n: (r[key][1] or 0) / 100 for n, r in zip(label, rows)},
            references=references,
            title=title,
            ylabel=ylabel,
        )

    chance_err = {"chance": chance_topk(len(toy.SOURCE_CLASSES))}
    bars("table3.png", t["table3"], "top1", "Table 3: val top-1 error, one Q", "top-1 error (%)", chance_err)
    bars("protocols.png", t["table5"] + t["table6"], "top1", "Tables 5-6: top-1 error", "top-1 error (%)")
    chance = {"chance": t["chance_map"][0] / 100}
    bars("transfer.png", t["table11"], "map", "Table 11: toy VOC2007 mAP", "mAP (%)", chance)


def claims_plot(path, claims: list[dict]) -> None:
    """Each claim's gain with its 95% interval (points, positive = the paper's direction) and
    the paper's gain where it states one: a gain whose bar crosses 0 is inside the noise."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    fig = Figure(figsize=(9, 0.35 * len(claims) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(claims))[::-1]
    gains = np.array([c["effect"] for c in claims])
    ci = np.array([[np.nan if v is None else v for v in c["ci95"]] for c in claims], dtype=float)
    err = np.nan_to_num(np.abs(ci - gains[:, None]).T)  # no interval (nothing measured): no bar
    ax.errorbar(gains, y, xerr=err, fmt="o", capsize=3, label="ours, 95% interval")
    paper = [(yi, c["paper_gain"]) for yi, c in zip(y, claims) if c["paper_gain"] is not None]
    if paper:
        ax.plot([g for _, g in paper], [yi for yi, _ in paper], "rx", label="paper")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [c["claim"] for c in claims], fontsize=8)
    ax.set_xlabel("gain (points of top-1 error or mAP; > 0: as the paper says)")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=100, format="png")


def nets_table(results: dict) -> str:
    """Per net kind: the end of its holdout curve and its training time (mean over seeds)."""
    by: dict = {}
    for n, e in results["final_holdout_err"].items():
        by.setdefault(kind(n), []).append((e, results["seconds"].get(f"train {n}", 0.0)))
    rows = [
        [k, len(v), f"{np.mean([e['final'] for e, _ in v]):.1f}",
         "-" if v[0][0]["end_change"] is None else f"{np.mean([e['end_change'] for e, _ in v]):+.1f}",
         f"{np.mean([t for _, t in v]):.0f}"]
        for k, v in by.items()
    ]  # fmt: skip

    header = ["net", "seeds", "holdout top-1 % at the end", "change over the last 6 epochs", "training s"]
    return "## Nets\n\n" + markdown_table(header, rows)


def _holdout_curve(nets_dir, net: str) -> list[float]:

    rows = [json.loads(line) for line in (nets_dir / net / "metrics.jsonl").read_text().splitlines()]
    return [100 * r["val_top1_err"] for r in rows if "val_top1_err" in r]


def final_errors(cfg: MiniatureConfig, nets: list[Net]) -> dict:
    """Per net: the holdout top-1 error % of its last epoch and how much the curve still fell at
    the end (mean of the last 3 epochs minus the mean of the 3 before: near 0 on a flat curve)."""
    out = {}
    for net in nets:
        e = _holdout_curve(cfg.out / "nets", net.name)
        out[net.name] = dict(
            final=e[-1], end_change=float(np.mean(e[-3:]) - np.mean(e[-6:-3])) if len(e) >= 6 else None
        )
    return out


def curves_plot(path, nets_dir, nets: list[str]) -> None:
    """One panel per net kind: the holdout top-1 error of each seed per epoch (the trainer's
    ``metrics.jsonl``), so that a reader sees whether every net ended its schedule on a flat
    curve."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    kinds = list(dict.fromkeys(kind(n) for n in nets))
    cols = 4
    fig = Figure(figsize=(3 * cols, 2.4 * -(-len(kinds) // cols)), layout="constrained")
    axes = fig.subplots(-(-len(kinds) // cols), cols, squeeze=False).ravel()
    for ax, k in zip(axes, kinds):
        for n in (n for n in nets if kind(n) == k):
            e = _holdout_curve(nets_dir, n)
            ax.plot(range(1, len(e) + 1), e, label=n[len(k) + 1 :])
        ax.axhline(100 * chance_topk(len(toy.SOURCE_CLASSES)), color="grey", ls=":", lw=0.8)
        ax.set_title(k, fontsize=9)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    for ax in axes[len(kinds) :]:
        ax.set_visible(False)
    fig.supxlabel("epoch")
    fig.supylabel("holdout top-1 error (%), chance dotted")
    fig.savefig(path, dpi=90, format="png")
