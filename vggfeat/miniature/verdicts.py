"""The claims of the paper that the miniature judges, written as data, the paper's numbers for
them, and the judging itself: each claim's two systems compared by :mod:`vggfeat.stats` (paired
for two readings of the same nets, Welch for different nets, TOST for the claim of no effect),
with a bootstrap over the evaluated images for the test-sampling noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import stats

PAPER_T3 = {  # Table 3, S = 256 (= S fixed here), Q = S: top-1 / top-5 error %
    "A-fixed": (29.6, 10.4), "A-LRN-fixed": (29.7, 10.5), "B-fixed": (28.7, 9.9),
    "C-fixed": (28.1, 9.4), "D-fixed": (27.0, 8.8), "E-fixed": (27.3, 9.0),
}  # fmt: skip
PAPER_T11 = {"D": 89.3, "E": 89.3, "D&E": 89.7}  # VOC-2007 mAP %


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison: ``better`` beats ``worse`` (systems named (net
    kind, protocol)); ``paper``: the paper's two numbers (top-1 error % or mAP %) or a note where
    it gives no pair; ``paired``: the two systems are readings of the same nets (seed by seed);
    ``margin``: set for a claim of no effect (``better`` being the system with the extra
    ingredient), the largest gain (points) that still counts as none, fixed before the run."""

    text: str
    better: tuple[str, str]
    worse: tuple[str, str]
    paper: tuple[float, float] | str
    paired: bool = False
    margin: float | None = None


def _single(c: str) -> tuple[str, str]:
    return (c, "single")


CLAIMS = [
    # no effect: within 2 points of top-1 error (the paper's Table 3 differences are ~1 point)
    Claim(
        "LRN does not help (A-LRN vs A)", _single("A-LRN-fixed"), _single("A-fixed"), (29.7, 29.6), margin=2.0
    ),
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
        Claim(
            f"multi-scale testing helps: {c}",
            (f"{c}-jitter", "multi"),
            _single(f"{c}-jitter"),
            pair,
            paired=True,
        )
        for c, pair in (("C", (26.3, 27.3)), ("D", (24.8, 25.6)), ("E", (24.8, 25.5)))
    ),
    *(
        Claim(
            f"dense & multi-crop complementary: {c}",
            (f"{c}-jitter", "both"),
            (f"{c}-jitter", "best-of"),
            (24.4, 24.6),
            paired=True,
        )  # fmt: skip
        for c in "DE"
    ),
    Claim(
        "fusion of D & E beats the better of the two",
        ("D&E-jitter", "fusion"),
        ("D&E-jitter", "best-single"),
        (23.7, 24.4),
        paired=True,  # the fusion of each seed's D and E against the better of them
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
        paired=True,  # each seed's D and E stacked against the better of them
    ),
]


def _gain(values_better, values_worse, higher_better: bool) -> float:
    d = float(np.mean(values_better) - np.mean(values_worse))
    return d if higher_better else -d


def _top1_error(wrong: np.ndarray, _labels) -> float:
    return 100 * float(np.mean(wrong))


_MAP = stats.map_metric("voc07")  # Table 11's toy target follows the VOC2007 protocol


def _map(scores: np.ndarray, labels: np.ndarray) -> float:
    return 100 * _MAP(scores, labels)


def compare(claim: Claim, a: list[dict], b: list[dict], *, test_labels, n_boot: int) -> stats.Verdict:
    """Judge ``claim`` on the per-seed results ``a`` (of ``claim.better``) and ``b`` (of
    ``claim.worse``): the effect is the gain in the paper's direction (points of top-1 error or of
    mAP), its test-sampling noise a paired bootstrap over the val images (per-image top-1 misses)
    or the test images (mAP of the SVM scores; fewer resamples, AP is slow)."""
    if claim.better[1] == "transfer":  # mAP of the SVM scores, higher is better
        va, vb = [r["value"] for r in a], [r["value"] for r in b]
        sa, sb = [r["scores"] for r in a], [r["scores"] for r in b]
        boot = stats.paired_bootstrap(_map, sa, sb, test_labels, n=min(n_boot, 200))
    else:  # top-1 error: the gain is the worse system's error minus the better one's
        va, vb = [r["value"] for r in b], [r["value"] for r in a]
        wa, wb = [r["wrong"] for r in b], [r["wrong"] for r in a]
        boot = stats.paired_bootstrap(_top1_error, wa, wb, np.zeros(len(wa[0])), n=n_boot)
    if claim.margin is not None:
        return stats.tost(va, vb, margin=claim.margin, paired=claim.paired, claim=claim.text, boot=boot)
    compare_fn = stats.paired if claim.paired else stats.welch
    return compare_fn(va, vb, claim=claim.text, boot=boot)


def judge(systems: dict, *, test_labels: np.ndarray | None, n_boot: int) -> list[dict]:
    """Every claim of :data:`CLAIMS` whose two systems were measured: the paper's numbers and
    gain, ours (mean over seeds), and the :class:`vggfeat.stats.Verdict` fields (effect = our
    gain, ci95, p, p_holm over the claims judged together, test, verdict)."""
    rows, verdicts = [], []
    for claim in CLAIMS:
        better, worse, paper = claim.better, claim.worse, claim.paper
        if better not in systems or worse not in systems:
            continue
        a, b = systems[better], systems[worse]
        transfer = better[1] == "transfer"
        va, vb = [r["value"] for r in a], [r["value"] for r in b]
        verdicts.append(compare(claim, a, b, test_labels=test_labels, n_boot=n_boot))
        paper_gain = _gain(paper[0], paper[1], transfer) if isinstance(paper, tuple) else None
        rows.append(
            dict(
                better="/".join(better), worse="/".join(worse),
                paper=paper if isinstance(paper, str) else list(paper), paper_gain=paper_gain,
                ours=[float(np.mean(va)), float(np.mean(vb))], seeds=[len(va), len(vb)],
                unit="mAP %" if transfer else "top-1 error %", margin=claim.margin,
            )
        )  # fmt: skip
    return [{**v.as_dict(), **row} for v, row in zip(stats.holm(verdicts), rows)]
