"""The claims of the paper that the miniature judges, the paper's numbers for them, and the
verdict logic: a measured gain against the noise of the measurement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .measure import bootstrap_se, map_bootstrap_se


def spread(a, b, *, boot_se: float, seed_sd: float | None = None, paired: bool = False) -> float:
    """Twice the standard error (points) of mean(a) - mean(b), the per-seed results of two
    systems: the sampling of the evaluated images (``boot_se``, a paired bootstrap) plus the
    training noise. Training noise: the per-seed differences' spread for two protocols of the
    same nets (``paired``), else each side's seed std when both have 2+ seeds, else ``seed_sd``
    (the seed std pooled over the nets that have several; None: none known)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        train = np.var(a - b, ddof=1) / len(a) if len(a) > 1 else 0.0
    elif len(a) > 1 and len(b) > 1:
        train = np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)
    else:
        train = (seed_sd or 0.0) ** 2 * (1 / len(a) + 1 / len(b))
    return float(2 * np.sqrt(train + boot_se**2))


def verdict(gain: float, spread: float, *, null: bool = False) -> str:
    """Judge a claim from the measured ``gain`` (points, positive in the paper's direction) and
    the noise ``spread``: "holds" beyond the spread, "does not hold" beyond it the other way,
    "inconclusive" within it. A claim of no effect (``null``, "LRN does not help", where the
    gain is what the extra ingredient brings) holds unless that gain exceeds the spread."""
    if null:
        return "does not hold" if gain > spread else "holds"
    return "holds" if gain > spread else "does not hold" if gain < -spread else "inconclusive"


PAPER_T3 = {  # Table 3, S = 256 (= S fixed here), Q = S: top-1 / top-5 error %
    "A-fixed": (29.6, 10.4), "A-LRN-fixed": (29.7, 10.5), "B-fixed": (28.7, 9.9),
    "C-fixed": (28.1, 9.4), "D-fixed": (27.0, 8.8), "E-fixed": (27.3, 9.0),
}  # fmt: skip
PAPER_T11 = {"D": 89.3, "E": 89.3, "D&E": 89.7}  # VOC-2007 mAP %


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison: ``better`` beats ``worse`` (systems named (net
    kind, protocol)); ``paper``: the paper's two numbers (top-1 error % or mAP %) or a note where
    it gives no pair; ``null``: a claim of no effect, ``better`` being the system with the extra
    ingredient."""

    text: str
    better: tuple[str, str]
    worse: tuple[str, str]
    paper: tuple[float, float] | str
    null: bool = False


def _single(c: str) -> tuple[str, str]:
    return (c, "single")


CLAIMS = [
    Claim("LRN does not help (A-LRN vs A)", _single("A-LRN-fixed"), _single("A-fixed"), (29.7, 29.6), True),
    Claim("depth: B (13 layers) beats A (11)", _single("B-fixed"), _single("A-fixed"), (28.7, 29.6)),
    Claim("depth: C (16, 1x1) beats B (13)", _single("C-fixed"), _single("B-fixed"), (28.1, 28.7)),
    Claim("depth: D (16) beats B (13)", _single("D-fixed"), _single("B-fixed"), (27.0, 28.7)),
    Claim("depth: E (19) beats D (16), jittered", _single("E-jitter"), _single("D-jitter"), (25.5, 25.6)),
    Claim("C (1x1) worse than D (3x3), jittered", _single("D-jitter"), _single("C-jitter"), (25.6, 27.3)),
    Claim(
        "B beats B-5x5, its shallow control", _single("B-fixed"), _single("B-5x5-fixed"), "B-5x5: 7% higher"
    ),
    *(
        Claim(f"scale jittering helps: {c}", _single(f"{c}-jitter"), _single(f"{c}-fixed"), pair)
        for c, pair in (("C", (27.3, 28.1)), ("D", (25.6, 27.0)), ("E", (25.5, 27.3)))
    ),
    Claim(
        "jittering, not the extra epochs: D-jitter vs D fine-tuned as long at fixed S",
        _single("D-jitter"),
        _single("D-fixedft"),
        "not in the paper (control)",
    ),  # fmt: skip
    *(
        Claim(f"multi-scale testing helps: {c}", (f"{c}-jitter", "multi"), _single(f"{c}-jitter"), pair)
        for c, pair in (("C", (26.3, 27.3)), ("D", (24.8, 25.6)), ("E", (24.8, 25.5)))
    ),
    *(
        Claim(
            f"dense & multi-crop complementary: {c}",
            (f"{c}-jitter", "both"),
            (f"{c}-jitter", "best-of"),
            (24.4, 24.6),
        )  # fmt: skip
        for c in "DE"
    ),
    Claim(
        "fusion of D & E beats the better of the two",
        ("D&E-jitter", "fusion"),
        ("D&E-jitter", "best-single"),
        (23.7, 24.4),
    ),  # fmt: skip
    Claim(
        "transfer: D beats A (toy VOC07 mAP)",
        ("D", "transfer"),
        ("A", "transfer"),
        "D 89.3 vs the 8-layer CNN-S 82.4",
    ),  # fmt: skip
    Claim("transfer: E beats D", ("E", "transfer"), ("D", "transfer"), (89.3, 89.3)),
    Claim(
        "transfer: D & E beats the better of D, E",
        ("D&E", "transfer"),
        ("best-of-D-E", "transfer"),
        (89.7, 89.3),
    ),
]


def pooled_seed_sd(systems: dict) -> float | None:
    """The seed std of single-scale top-1 error (points), pooled over the nets with 2+ seeds."""
    var = [
        np.var([r["value"] for r in v], ddof=1)
        for (k, p), v in systems.items()
        if p == "single" and len(v) > 1
    ]
    return float(np.sqrt(np.mean(var))) if var else None


def _gain(values_better, values_worse, higher_better: bool) -> float:
    d = float(np.mean(values_better) - np.mean(values_worse))
    return d if higher_better else -d


def judge(systems: dict, *, test_labels: np.ndarray | None, n_boot: int) -> list[dict]:
    """Every claim of :data:`CLAIMS` whose two systems were measured: the paper's numbers and
    gain, ours (mean over seeds), the spread and the verdict."""
    seed_sd, rows = pooled_seed_sd(systems), []
    for claim in CLAIMS:
        better, worse, paper = claim.better, claim.worse, claim.paper
        if better not in systems or worse not in systems:
            continue
        a, b = systems[better], systems[worse]
        transfer = better[1] == "transfer"
        va, vb = [r["value"] for r in a], [r["value"] for r in b]
        if transfer:
            scores = [r["scores"] for r in a], [r["scores"] for r in b]
            boot = map_bootstrap_se(*scores, test_labels, n=min(n_boot, 200))  # AP is slow: fewer
        else:
            wa, wb = (np.mean([r["wrong"] for r in s], axis=0) for s in (a, b))
            boot = bootstrap_se(wb, wa, n=n_boot)
        paired = better[0] == worse[0]
        sp = spread(va, vb, boot_se=boot, seed_sd=None if transfer else seed_sd, paired=paired)
        gain = _gain(va, vb, transfer)
        paper_gain = _gain(paper[0], paper[1], transfer) if isinstance(paper, tuple) else None
        rows.append(
            dict(
                claim=claim.text, better="/".join(better), worse="/".join(worse),
                paper=paper if isinstance(paper, str) else list(paper), paper_gain=paper_gain,
                ours=[float(np.mean(va)), float(np.mean(vb))], seeds=[len(va), len(vb)],
                gain=gain, spread=sp, verdict=verdict(gain, sp, null=claim.null),
                unit="mAP %" if transfer else "top-1 error %",
            )
        )  # fmt: skip
    return rows
