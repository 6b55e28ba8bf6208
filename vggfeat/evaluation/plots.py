"""Benchmark report outputs: PNG plots (precision-recall curves, per-class bar charts) and the
``report.md`` / ``results.json`` pair that puts a run beside the paper's table.

matplotlib is imported lazily, and figures are built with ``matplotlib.figure.Figure`` rather
than pyplot, so nothing touches the global backend or leaks figures: saving a PNG goes through
the Agg canvas on any machine, with or without a display.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..weights.loader import fingerprint
from .chance import ap_chance, chance_mean_class_recall, chance_topk
from .paper import CAFFE_RELEASE, NET_ARCH
from .svm import precision_recall

log = logging.getLogger("vggfeat")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    return Figure(figsize=(width, height), layout="constrained")


def _legend_outside(ax, fontsize: int = 8) -> None:
    """The legend right of the axes, where it covers no bar (constrained layout makes room)."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    return path


def pr_curves(
    path, curves: dict, *, aps: dict | None = None, chance: dict | None = None, title: str = "", cols: int = 5
) -> Path:
    """One small precision-recall panel per class. ``curves``: name -> (recall (M,), precision
    (M,)) in rank order (NaN precision entries, before any positive or negative, are dropped);
    ``aps``: name -> AP in [0, 1] for the panel titles; ``chance``: name -> the precision of a
    random ranking (the class's positive rate), drawn dotted."""
    rows = max(1, math.ceil(len(curves) / cols))
    fig = _figure(2.4 * cols, 2.2 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for ax, (name, (rec, prec)) in zip(axes.flat, curves.items()):
        rec, prec = np.asarray(rec), np.asarray(prec)
        ok = ~np.isnan(prec)
        ax.step(rec[ok], prec[ok], where="post", lw=1.2)
        if chance and name in chance:
            ax.axhline(chance[name], color="tab:red", ls=":", lw=1)
        ap = (aps or {}).get(name)
        ax.set_title(name if ap is None else f"{name} {100 * ap:.1f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    if title or chance:
        fig.suptitle(title + ("\n(dotted: chance, the class's positive rate)" if chance else ""))
    return _save(fig, path)


def bar_chart(
    path,
    values: dict,
    *,
    title: str = "",
    ylabel: str = "",
    references: dict | None = None,
    errors: dict | None = None,
    bands: dict | None = None,
    markers: dict | None = None,
    marker_label: str = "chance",
    percent: bool = True,
) -> Path:
    """Per-class bars (``values``: name -> value in [0, 1]), with horizontal lines for
    ``references`` (label -> value in [0, 1], e.g. the run's mean, the paper's, chance), shaded
    ``bands`` (label -> (centre, half-width), e.g. chance +- its std), error bars of
    +-``errors[name]`` (e.g. the std over seeds) and a black tick per bar at ``markers[name]``
    (e.g. each class's chance AP), labelled ``marker_label``."""
    scale = 100 if percent else 1
    names = list(values)
    fig = _figure(max(8.0, min(40.0, 0.28 * len(names)) + 1.5), 4.0)
    ax = fig.add_subplot()
    yerr = [scale * (errors or {}).get(n, 0.0) for n in names] if errors else None
    ax.bar(range(len(names)), [scale * values[n] for n in names], yerr=yerr, capsize=3, color="tab:blue")
    if markers:
        x = [i for i, n in enumerate(names) if n in markers]
        ax.plot(x, [scale * markers[names[i]] for i in x], "k_", ms=10, mew=2, label=marker_label)
    for (label, v), colour in zip((references or {}).items(), ("tab:red", "tab:green", "tab:orange", "k")):
        ax.axhline(scale * v, color=colour, ls="--", lw=1, label=f"{label}: {scale * v:.1f}")
    for (label, (v, half)), colour in zip((bands or {}).items(), ("tab:gray", "tab:purple")):
        ax.axhspan(scale * (v - half), scale * (v + half), color=colour, alpha=0.3, lw=0)
        ax.axhline(scale * v, color=colour, lw=1, label=f"{label}: {scale * v:.1f} ± {scale * half:.1f}")
    if references or bands or markers:
        _legend_outside(ax)
    ax.set_xticks(
        range(len(names)),
        names,
        rotation=90,
        fontsize=9 if len(names) <= 40 else 7 if len(names) <= 110 else 4,
    )
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, scale * 1.02)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


# --- reports ---------------------------------------------------------------------------------


def paper_name(configs: Sequence[str]) -> str:
    """Table 11's row name for the nets used: ("D",) -> "VGG Net-D", ("D", "E") -> "VGG Net-D &
    Net-E"."""
    return "VGG " + " & ".join(f"Net-{c}" for c in configs)


# The networks of the paper: full width, fc 4096, no batch norm, trained on 224 crops.
# The paper's weights: the authors' Caffe release (D and E; C was never published), read from
# the .caffemodel or from a conversion of it, whose provenance names the file.


def not_the_papers_weights(net) -> str | None:
    """Why ``net``'s weights are not the paper's (None: they are the authors' release): read
    from the net's own record of where its weights came from."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    origin = str(
        getattr(net, "meta", {}).get("provenance") or cfg.get("provenance") or cfg.get("source") or ""
    )
    release = CAFFE_RELEASE.get(net.config)
    if release and release in origin:
        read = getattr(net, "meta", {}).get("release_fingerprint")
        if read is None or read == fingerprint(net):
            return None
        origin = f"changed since they were read from {release}.caffemodel (fine-tuned)"
    where = f"{release}.caffemodel or a conversion of it" if release else "none were published for this net"
    return f"VGG-{net.config}'s weights are {origin or 'of no recorded origin'}, not the paper's ({where})"


def deviations(
    nets, weights, *, rows, scales=None, paper_scales=None, aggregate=None, paper_aggregate=None
) -> list[str]:
    """Why a benchmark run's nets or descriptors differ from the paper's protocol, one reason
    each (empty: comparable). ``nets``: the built VGGs; ``weights``: their sources (None =
    random); ``rows``: the paper's row names for nets (e.g. "VGG Net-D"); ``scales`` and
    ``aggregate`` are compared with the paper's when given."""
    reasons = []
    if any(w is None for w in weights):
        reasons.append("random weights (--weights none)")
    # fine-tuned, torchvision's IMAGENET1K_V1 (trained by torchvision), or any other non-release
    reasons += [why for n, w in zip(nets, weights) if w is not None and (why := not_the_papers_weights(n))]
    name = paper_name([n.config for n in nets])
    if name not in rows:
        reasons.append(f"{name}: the paper reports no such nets here (it has {', '.join(rows)})")
    for n in nets:
        differ = {k: n.arch.get(k) for k, v in NET_ARCH.items() if n.arch.get(k) != v}
        if differ:
            reasons.append(f"VGG-{n.config} is not the paper's network ({differ}; the paper's: {NET_ARCH})")
    if scales is not None and tuple(scales) != tuple(paper_scales):
        reasons.append(f"scales Q = {list(scales)} (the paper's: {list(paper_scales)})")
    if aggregate is not None and aggregate != paper_aggregate:
        reasons.append(f"--aggregate {aggregate} (the paper's: {paper_aggregate})")
    return reasons


def _comparability(notes, payload, not_comparable) -> tuple[list[str], dict, str]:
    """The notes, payload and row suffix of a report, marked comparable with the paper only when
    there is no reason against it."""
    reasons = list(not_comparable)
    if reasons:
        notes = [f"**Not comparable with the paper: {'; '.join(reasons)}.**", *notes]
    payload = {**payload, "comparable": not reasons, "not_comparable": reasons}
    return list(notes), payload, " (not comparable)" if reasons else ""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; floats are printed with one decimal."""
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def write_report(out_dir, *, markdown: str, payload: dict) -> tuple[Path, Path]:
    """``report.md`` and ``results.json`` under ``out_dir`` (created); NaN is written as null."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "results.json"
    md.write_text(markdown)
    clean = json.loads(json.dumps(payload, default=_jsonable), parse_constant=lambda c: None)
    js.write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    log.info("wrote %s and %s", md, js)
    return md, js


def _bullets(notes: Sequence[str]) -> str:
    return "".join(f"- {n}\n" for n in notes)


def ap_report(
    out_dir, *, title: str, notes: Sequence[str], classes: Sequence[str], results: dict, labels: np.ndarray,
    column: str, paper: dict, paper_row: str, payload: dict, not_comparable: Sequence[str] = (),
    permutations: int = 200,
) -> str:  # fmt: skip
    """Write a VOC-style report: per-class AP of each result (``results``: label ->
    :class:`vggfeat.svm.VOCResult`) beside the class's positives and chance AP, the mAPs beside
    the paper's rows (``paper``: row -> mAP %, ``paper_row`` the one with the same nets) and the
    mAP at chance (:func:`vggfeat.evaluation.chance.ap_chance`, ``permutations`` random rankings),
    ``results.json``
    (``payload`` plus the numbers), ``pr_curves.png`` and ``ap_per_class.png`` of the last
    result. ``labels``: (N_test, K). ``not_comparable``: the reasons this run cannot be compared
    with the paper (none: it can)."""

    out_dir = Path(out_dir)
    notes, payload, suffix = _comparability(notes, payload, not_comparable)
    last = list(results.values())[-1]
    chance = ap_chance(labels, classes=classes, ap=last.ap, permutations=permutations)
    md = f"# {title}\n\n" + _bullets(notes) + "\n"
    per_class = [
        [c, chance["positives"][c], 100 * chance["positive_rate"][c], 100 * chance["ap"][c]]
        + [100 * r.aps[k] for r in results.values()]
        for k, c in enumerate(classes)
    ]
    header = ["class", "positives", "positive rate (%)", "chance AP (%)"] + [f"AP (%), {n}" for n in results]
    md += markdown_table(header, per_class) + "\n"
    md += (
        "Chance: a ranking without information has on average the class's positive rate "
        "(positives among the non-difficult test images) as its precision at every recall; with "
        "few positives its AP lies above that rate, so chance AP is measured: the mean "
        f"{last.ap} AP of {permutations} random rankings of the test images.\n\n"
    )
    rows = [[f"this run, {n}{suffix}", 100 * r.map] for n, r in results.items()]
    rows += [[f"{k} (paper{', same setting' if k == paper_row else ''})", v] for k, v in paper.items()]
    rows += [["chance (random rankings)", f"{100 * chance['map']:.1f} ± {100 * chance['map_std']:.1f}"]]
    md += markdown_table(["", column], rows)
    numbers = {
        n: dict(ap=dict(zip(classes, r.aps)), map=r.map, C=r.C, val_map=r.val_scores)
        for n, r in results.items()
    }
    payload = {**payload, "notes": list(notes), "results": numbers, "chance": chance}
    write_report(out_dir, markdown=md, payload={**payload, "paper": paper, "paper_row": paper_row})
    _ap_plots(out_dir, title, classes, last, labels, chance, paper.get(paper_row))
    return md


def _ap_plots(out_dir, title, classes, last, labels, chance: dict, paper_map: float | None) -> None:
    """``pr_curves.png`` and ``ap_per_class.png`` of one result, with the chance levels."""
    aps = dict(zip(classes, last.aps))
    with warnings.catch_warnings():  # classes without positives were reported with their NaN AP
        warnings.simplefilter("ignore", RuntimeWarning)
        curves = {c: precision_recall(last.scores[:, k], labels[:, k]) for k, c in enumerate(classes)}
    curves = {c: v for c, v in curves.items() if v is not None}
    pr_curves(out_dir / "pr_curves.png", curves, aps=aps, chance=chance["positive_rate"], title=title)
    named = {c: f"{c} ({chance['positives'][c]})" for c in classes}  # the positives in the label
    refs = {"this run": last.map} | ({"paper": paper_map / 100} if paper_map else {})
    refs |= {"chance mAP": chance["map"]}
    bar_chart(
        out_dir / "ap_per_class.png", {named[c]: 0.0 if np.isnan(a) else a for c, a in aps.items()},
        title=title + " (positives per class in brackets)", ylabel="AP (%)", references=refs,
        markers={named[c]: a for c, a in chance["ap"].items() if not np.isnan(a)}, marker_label="chance AP",
    )  # fmt: skip


def recall_report(
    out_dir, *, title: str, notes: Sequence[str], classes: Sequence[str], result, column: str,
    paper: dict, paper_row: str, payload: dict, label: str = "this run", not_comparable: Sequence[str] = (),
) -> str:  # fmt: skip
    """Write a Caltech-style report: mean class recall mean +- std over the splits beside the
    paper's rows (``paper``: row -> (mean %, std %)), ``results.json`` and
    ``recall_per_class.png`` (recall of each class averaged over the splits), each with the
    chance level 1 / K of K classes. ``not_comparable``: as for :func:`ap_report`."""

    out_dir = Path(out_dir)
    notes, payload, suffix = _comparability(notes, payload, not_comparable)
    md = f"# {title}\n\n" + _bullets(notes) + "\n"
    split_rows = [
        [f"split {i}", f"{C:g}", 100 * r] for i, (C, r) in enumerate(zip(result.Cs, result.recalls))
    ]
    md += markdown_table(["split", "C", "mean class recall (%)"], split_rows) + "\n"
    chance = chance_mean_class_recall(len(classes))
    rows = [[label + suffix, f"{100 * result.mean:.1f} ± {100 * result.std:.1f}"]]
    rows += [
        [f"{k} (paper{', same setting' if k == paper_row else ''})", f"{m:.1f} ± {s:.1f}"]
        for k, (m, s) in paper.items()
    ]
    rows += [[f"chance (1 / {len(classes)} classes)", f"{100 * chance:.2f}"]]
    md += markdown_table(["", column], rows)
    numbers = dict(recalls=result.recalls, mean=result.mean, std=result.std, Cs=result.Cs,
                   class_recall=dict(zip(classes, result.class_recall)), chance=chance)  # fmt: skip
    write_report(out_dir, markdown=md, payload={**payload, "notes": list(notes), **numbers,
                                                "paper": paper, "paper_row": paper_row})  # fmt: skip
    refs = {"this run": result.mean} | ({"paper": paper[paper_row][0] / 100} if paper_row in paper else {})
    refs |= {"chance (1/K)": chance}
    values = {c: 0.0 if np.isnan(v) else v for c, v in zip(classes, result.class_recall)}
    bar_chart(out_dir / "recall_per_class.png", values, title=title, ylabel="recall (%)", references=refs)
    return md


# --- ILSVRC protocols (Tables 3-6) -------------------------------------------------------------


def protocol_errors(
    path, rows: Sequence[dict], *, classes: int, title: str = "", images: int | None = None
) -> Path:
    """Top-1 and top-5 error (%) of each (model, protocol) row of ``ilsvrc_eval`` as bars, the
    paper's values as black ticks where it reports them, and the chance levels of ``classes``
    classes, 100 (1 - 1/K) and 100 (1 - min(5, K)/K), as dashed lines. The default title says
    what was evaluated (``classes``, and ``images`` when given), not which dataset: a toy folder
    is not ILSVRC-2012 val."""
    if not rows:
        raise ValueError("protocol_errors: no rows to plot")
    fig = _figure(max(6.0, 1.1 * len(rows) + 2), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for off, key, colour in ((-0.2, "top1", "tab:blue"), (0.2, "top5", "tab:orange")):
        ax.bar(x + off, [r[key] for r in rows], width=0.4, color=colour, label=f"ours {key}")
        paper = [
            (i + off, r[f"paper_{key}"]) for i, r in enumerate(rows) if r.get(f"paper_{key}") is not None
        ]
        if paper:
            ax.scatter(
                *zip(*paper),
                marker="_",
                s=300,
                color="k",
                zorder=3,
                label="paper" if off < 0 else None,
            )

    for k, style in ((1, "--"), (min(5, classes), ":")):
        ax.axhline(100 * chance_topk(classes, k), color="grey", ls=style, lw=1, label=f"chance top-{k}")
    ax.set_xticks(x, [f"{r['model']} {r['protocol']}" for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 102)
    ax.set_ylabel("error (%)")
    _legend_outside(ax, fontsize=7)
    seen = f"{images} images of {classes} classes" if images else f"{classes} classes"
    ax.set_title(title or f"error per protocol ({seen})", fontsize=10)
    return _save(fig, path)


def class_errors(path, errors: np.ndarray, *, chance: float, title: str = "") -> Path:
    """Per-class top-1 error (%) sorted from best to worst (classes without images left out),
    its mean, and the chance level 100 (1 - 1/K): how evenly a net's error spreads over classes."""
    e = np.sort(np.asarray(errors, dtype=float)[~np.isnan(errors)])
    fig = _figure(7.0, 3.5)
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(e) + 1), 100 * e, drawstyle="steps-mid", color="tab:blue")
    ax.axhline(
        100 * e.mean(), color="tab:blue", ls="-", lw=0.8, label=f"mean over classes {100 * e.mean():.1f}"
    )
    ax.axhline(100 * chance, color="grey", ls="--", lw=1, label=f"chance {100 * chance:.1f}")
    ax.set_xlabel("class, sorted by error")
    ax.set_ylabel("top-1 error (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize=8)
    ax.set_title(title or "top-1 error per class", fontsize=10)
    return _save(fig, path)
