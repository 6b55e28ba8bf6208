"""The report of the paper in miniature: Tables 3-6 and 11 beside the paper's, the claims with
their verdicts (``report.md``, ``results.json``) and three PNG plots."""

from __future__ import annotations

import numpy as np

from .. import stats, toy
from .measure import eval_scales
from .runs import MiniatureConfig, Net, kind
from .verdicts import PAPER_T3, PAPER_T11

RESULTS = ("table3", "table4", "table5", "table6", "table11")
SHOWN = {"multi": "dense", "multicrop": "multi-crop", "both": "dense & multi-crop"}


def _ms(rs: list[dict], key: str = "value") -> list:
    """[mean, std over seeds (None for one seed), seeds]."""
    s = stats.per_seed([r[key] for r in rs])
    n = len(s["per_seed"])
    return [s["mean"], s["std"] if n > 1 else None, n]


def _row(systems: dict, key: tuple, **about) -> dict:
    return dict(**about, top1=_ms(systems[key]), top5=_ms(systems[key], "top5"))


def tables(cfg: MiniatureConfig, nets: list[Net], systems: dict, tsys: dict, chance) -> dict:
    """Tables 3-6 (top-1 / top-5 error %) and 11 (mAP %) as rows; every number is [mean, std
    or None, seeds]; ``paper``: the paper's pair (top-1 / top-5) or mAP where it has one."""
    from ..evaluate import PAPER

    t: dict = {n: [] for n in RESULTS}
    for k, net in {kind(n.name): n for n in nets}.items():
        qs, q = eval_scales(cfg, net)
        s = list(cfg.jitter()) if net.jitter else cfg.fixed_s()

        def paper(p, net=net, k=k):
            return PAPER[p].get(net.config) if net.jitter else PAPER_T3.get(k) if p == "single" else None

        t["table3"].append(_row(systems, (k, "single"), net=k, S=s, Q=q, paper=paper("single")))
        t["table4"].append(_row(systems, (k, "multi"), net=k, S=s, Q=list(qs), paper=paper("multi")))
        if (k, "both") in systems:
            for p in ("multi", "multicrop", "both"):
                t["table5"].append(
                    _row(systems, (k, p), net=k, protocol=SHOWN[p], Q=list(qs), paper=paper(p))
                )
    if ("D&E-jitter", "fusion") in systems:
        about = dict(net="D & E jittered, dense & multi-crop", paper=PAPER["fusion"]["D&E"])
        t["table6"].append(_row(systems, ("D&E-jitter", "fusion"), **about))
    for n in ("A", "D", "E", "D&E"):
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
    from ..plots import markdown_table

    return markdown_table(list(columns), [[f(r) for f in columns.values()] for r in rows])


ERRORS = {"top-1 %": lambda r: _fmt(r["top1"]), "top-5 %": lambda r: _fmt(r["top5"])}
PAPER_ERR = {"paper top-1 / top-5": lambda r: _paper(r["paper"])}
NET_S_Q = {"net": lambda r: r["net"], "S": lambda r: r["S"], "Q": lambda r: r["Q"]}
CLAIM_COLUMNS = {
    "claim": lambda c: c["claim"],
    "paper": lambda c: (
        " vs ".join(f"{v:.1f}" for v in c["paper"]) if isinstance(c["paper"], list) else c["paper"]
    ),
    "paper gain": lambda c: "-" if c["paper_gain"] is None else f"{c['paper_gain']:+.1f}",
    "ours": lambda c: f"{c['ours'][0]:.1f} vs {c['ours'][1]:.1f} ({c['unit']})",
    "gain [95% interval]": lambda c: f"{c['effect']:+.1f} [{_num(c['ci95'][0])}, {_num(c['ci95'][1])}]",
    "p (Holm)": lambda c: f"{_p(c['p'])} ({_p(c['p_holm'])})",
    "test": lambda c: c["test"],
    "verdict": lambda c: f"**{c['verdict']}**",
}


def _num(v) -> str:
    return "-" if v is None or np.isnan(v) else f"{v:+.1f}"


def _p(v) -> str:
    return "-" if v is None or np.isnan(v) else f"{v:.2g}"


def markdown(cfg: MiniatureConfig, results: dict) -> str:
    t, k = results["tables"], len(toy.SOURCE_CLASSES)
    lo, hi = cfg.jitter()
    md = (
        "# The paper in miniature (toy data, narrow nets)\n\n"
        f"Every net: width {cfg.width:g}, fc {cfg.fc_dim}, crop {cfg.crop}, batch norm, no dropout; "
        f'S = {cfg.fixed_s()} ("fixed", the paper\'s 256) or S in [{lo}, {hi}] ("jitter", [256, 512]). '
        f"Epochs: A, A-LRN {cfg.epochs} from random init; B, C, D, E {cfg.deep_epochs} from A (Sec. 3.1); "
        f"B-5x5 {cfg.epochs + cfg.deep_epochs} from random init; jittered C, D, E and the control "
        f"D-fixedft {cfg.jitter_epochs} from the fixed-S net at lr/10. Source task: {k} classes, "
        f"{cfg.source_train} training images per class; errors on {results['n_val']} val images "
        f"(chance top-1 {100 * stats.chance_topk(k):.1f}%) that nothing was tuned on (the learning-rate "
        "schedule reads holdout/). Cells: mean ± std (seeds).\n\n"
        "## Table 3: one test scale (dense)\n\n" + _table(t["table3"], NET_S_Q | ERRORS | PAPER_ERR)
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
    wall = results["seconds"]
    training = sum(v for n, v in wall.items() if n.startswith("train"))
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
    from .. import plots

    t = results["tables"]
    plots.write_report(cfg.out, markdown=markdown(cfg, results), payload=results)
    claims_plot(cfg.out / "claims.png", results["claims"])

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

    chance_err = {"chance": stats.chance_topk(len(toy.SOURCE_CLASSES))}
    bars("table3.png", t["table3"], "top1", "Table 3: val top-1 error, one Q", "top-1 error (%)", chance_err)
    bars("protocols.png", t["table5"] + t["table6"], "top1", "Tables 5-6: top-1 error", "top-1 error (%)")
    chance = {"chance": t["chance_map"][0] / 100}
    bars("transfer.png", t["table11"], "map", "Table 11: toy VOC2007 mAP", "mAP (%)", chance)


def claims_plot(path, claims: list[dict]) -> None:
    """Each claim's gain with its 95% interval (points, positive = the paper's direction) and
    the paper's gain where it states one: a gain whose bar crosses 0 is inside the noise."""
    from matplotlib.figure import Figure

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
