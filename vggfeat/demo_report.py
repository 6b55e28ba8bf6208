"""The demo's table: rows of mAP over seeds, the chance level of the test split, the verdicts of
the comparisons it is designed to show, and ``report.md`` / ``summary.json`` / ``map.png``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from . import toy


@dataclass
class Rows:
    """mAP per seed for each row of the table, and what each row is."""

    maps: dict[str, list[float]] = field(default_factory=dict)
    about: dict[str, tuple[str, str, list[int]]] = field(default_factory=dict)  # weights, descriptor, Q

    def add(self, name: str, value: float, weights: str, descriptor: str, q: list[int]) -> None:
        self.maps.setdefault(name, []).append(float(value))
        self.about[name] = (weights, descriptor, q)

    def mean_std(self, name: str) -> tuple[float, float]:
        v = np.asarray(self.maps[name])
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def chance_map(labels: np.ndarray, *, permutations: int, seed: int = 0) -> tuple[float, float]:
    """The chance level of a test split: mean and std over random permutations of the scores of
    the test mAP (11-point AP), i.e. what a descriptor without information scores."""
    from . import svm

    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(permutations):
        scores = rng.permuted(np.tile(np.arange(len(labels), dtype=float)[:, None], labels.shape[1]), axis=0)
        maps.append(svm.mean_ap(svm.average_precisions(scores, labels, warn=False), warn=False))
    return float(np.mean(maps)), float(np.std(maps, ddof=1))


def _exceeds(rows: Rows, a: str, b: str | tuple[float, float]) -> tuple[str, float, float]:
    """Does row ``a`` beat ``b`` (a row name or a (mean, std) pair) by more than the seed
    spread, the sum of the two stds? -> (verdict, gap, spread) in mAP points."""
    ma, sa = rows.mean_std(a)
    mb, sb = rows.mean_std(b) if isinstance(b, str) else b
    gap, spread = 100 * (ma - mb), 100 * (sa + sb)
    verdict = "holds" if gap > spread else ("does not hold" if gap < -spread else "within the noise")
    return verdict, gap, spread


def verdicts(rows: Rows, chance: tuple[float, float], qs: list[int]) -> list[tuple[str, str, float, float]]:
    """The comparisons the demo is designed to show: (claim, verdict, gap, spread)."""
    best_q = max((f"transfer-q{q}" for q in qs), key=lambda n: rows.mean_std(n)[0])
    pairs = [
        ("transfer beats training from scratch on the target", "transfer-multiscale", "scratch"),
        ("from scratch beats random weights", "scratch", "random"),
        ("random weights beat chance", "random", chance),
        ("raw pixels beat chance", "pixels", chance),
        (f"multi-scale Q beats the best single Q ({best_q[10:]})", "transfer-multiscale", best_q),
    ]
    return [(claim, *_exceeds(rows, a, b)) for claim, a, b in pairs]


def report(cfg, rows: Rows, chance: tuple[float, float], qs, source_err, seconds) -> str:
    """Write ``<out>/report.md``, ``<out>/summary.json`` and ``<out>/map.png``; returns the markdown."""
    from . import plots

    table = []
    for name in rows.maps:
        m, s = rows.mean_std(name)
        weights, descriptor, q = rows.about[name]
        n = len(rows.maps[name])
        table.append(
            [name, weights, descriptor, ", ".join(map(str, q)) or "-", f"{100 * m:.1f} ± {100 * s:.1f}", n]
        )
    table.append(
        [
            "chance",
            "-",
            "permuted test scores",
            "-",
            f"{100 * chance[0]:.1f} ± {100 * chance[1]:.1f}",
            cfg.permutations,
        ]
    )
    md = "# vggfeat demo: appendix B in miniature (toy source -> toy VOC2007 target)\n\n"
    md += plots.markdown_table(
        ["row", "weights", "descriptor", "Q", "test mAP (%) mean ± std", "seeds"], table
    )
    md += (
        f"\nmAP over the {len(toy.TARGET_CLASSES)} target classes (VOC2007 protocol: C chosen train -> val, "
        "SVMs refit on trainval, 11-point AP on test). ± is the std over training seeds (random-init "
        "seeds for `random`; `pixels` has no seed), and over permutations for `chance`. A gap counts "
        "when it exceeds the sum of the two rows' std.\n\n"
    )
    md += plots.markdown_table(
        ["claim", "verdict", "gap (mAP points)", "seed spread"],
        [[c, v, f"{g:+.1f}", f"{s:.1f}"] for c, v, g, s in verdicts(rows, chance, qs)],
    )
    k = len(toy.SOURCE_CLASSES)
    md += (
        f"\n- Source task ({k} shape-texture classes): validation top-1 error "
        f"{100 * np.mean(source_err):.1f}% (mean over seeds; chance {100 * (1 - 1 / k):.1f}%).\n"
        "- Wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".\n\n"
        "![target mAP](map.png)\n\nTraining curves (source, seed "
        f"{cfg.seeds[0]}): ![curves](source-s{cfg.seeds[0]}/curves.png)\n"
    )
    (cfg.out / "report.md").write_text(md)
    summary = {
        "chance_map": 100 * chance[0],
        "chance_std": 100 * chance[1],
        "rows": [
            {
                "name": n,
                "map": 100 * rows.mean_std(n)[0],
                "std": 100 * rows.mean_std(n)[1],
                "q": rows.about[n][2],
            }
            for n in rows.maps
        ],
        "verdicts": [
            {"claim": c, "verdict": v, "gap": g, "spread": s} for c, v, g, s in verdicts(rows, chance, qs)
        ],
        "seeds": list(cfg.seeds),
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plots.bar_chart(
        cfg.out / "map.png",
        {n: rows.mean_std(n)[0] for n in rows.maps},
        errors={n: rows.mean_std(n)[1] for n in rows.maps},
        references={"chance": chance[0]},
        title="target mAP (mean ± std over seeds)",
        ylabel="mAP (%)",
    )
    return md
