"""The demo's table and claims: rows of test mAP over seeds, the chance level of the test split,
the five claims judged by :mod:`vggfeat.stats`, and ``report.md`` / ``summary.json`` /
``map.png``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ...evaluation import plots, stats, svm
from ...evaluation.chance import chance_topk
from .. import toy

# The claims, exactly as summary.json names them, and the test each one takes (vggfeat.stats).
CLAIMS = (
    "transfer > scratch",  # different nets: Welch's t + test-sampling bootstrap
    "scratch > random",  # different nets: Welch's t + test-sampling bootstrap
    "random > chance",  # against the permutation null
    "pixels > chance",  # against the permutation null
    "multi-scale > best single Q",  # two readings of the same nets: paired t + paired bootstrap
)

CLAIM_FIELDS = ("claim", "effect", "ci95", "p", "p_holm", "test", "verdict")


@dataclass
class System:
    """One row of the table: which weights, which descriptor, which Q, and the VOC result of
    each seed (:class:`vggfeat.svm.VOCResult`)."""

    weights: str
    descriptor: str
    q: list[int]
    results: list = field(default_factory=list)

    def add(self, result) -> None:
        self.results.append(result)

    def maps(self) -> list[float]:
        """Test mAP (%) per seed."""
        return [100 * r.map for r in self.results]

    def val_maps(self) -> list[float]:
        """Validation mAP (%) per seed at the chosen C (what C and the best Q are chosen by)."""
        return [100 * max(r.val_scores.values()) for r in self.results]

    def scores(self) -> list[np.ndarray]:
        return [r.scores for r in self.results]


def judge(systems: dict[str, System], chance: np.ndarray, best_q: int, test_labels, *, n: int) -> list:
    """The five claims (:data:`CLAIMS`) as :class:`vggfeat.stats.Verdict` with Holm-adjusted p.
    ``chance``: permutation mAPs (fractions); mAPs are compared in points."""
    multi, best = systems["transfer-multiscale"], systems[f"transfer-q{best_q}"]

    def boot(a: System, b: System, seed: int) -> np.ndarray:
        # mAP points, as the per-seed values (the VOC2007 11-point AP of the demo's protocol)
        return 100 * stats.paired_bootstrap(
            svm.map_metric(), a.scores(), b.scores(), test_labels, n=n, seed=seed
        )

    null = 100 * np.asarray(chance)
    tr, sc, ra = systems["transfer-multiscale"], systems["scratch"], systems["random"]
    verdicts = [
        stats.welch(tr.maps(), sc.maps(), claim=CLAIMS[0], boot=boot(tr, sc, 0)),
        stats.welch(sc.maps(), ra.maps(), claim=CLAIMS[1], boot=boot(sc, ra, 1)),
        stats.versus_null(ra.maps(), null, claim=CLAIMS[2]),
        stats.versus_null(systems["pixels"].maps(), null, claim=CLAIMS[3]),
        stats.paired(multi.maps(), best.maps(), claim=CLAIMS[4], boot=boot(multi, best, 2)),
    ]
    return stats.holm(verdicts)


def _write(path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half


def _fmt(v: float) -> str:
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def _tables(cfg, systems, chance, best_q, claims) -> str:

    rows = []
    for name, s in systems.items():
        m = stats.per_seed(s.maps())
        rows.append([
            name + (" (best single Q, chosen on val)" if name == f"transfer-q{best_q}" else ""),
            s.weights, s.descriptor, ", ".join(map(str, s.q)) or "-", f"{m['mean']:.1f} ± {m['std']:.1f}",
            " ".join(f"{v:.1f}" for v in m["per_seed"]),
        ])  # fmt: skip
    c = 100 * np.asarray(chance)
    rows.append(
        [
            "chance",
            "-",
            "permuted test scores",
            "-",
            f"{c.mean():.1f} ± {c.std(ddof=1):.1f}",
            f"{len(c)} permutations",
        ]
    )
    md = plots.markdown_table(
        ["row", "weights", "descriptor", "Q", "test mAP (%) mean ± std", "per seed"], rows
    )
    md += (
        f"\nmAP over the {len(toy.TARGET_CLASSES)} target classes (VOC2007 protocol: C chosen train -> val, "
        "SVMs refit on trainval, 11-point AP on test). ± is the std over training seeds (random-init "
        "seeds for `random`; `pixels` has no seed), and over permutations for `chance`.\n\n"
    )
    head = ["claim", "verdict", "effect (mAP points)", "95% interval", "p", f"Holm p ({len(claims)})", "test"]
    md += plots.markdown_table(
        head,
        [[v.claim, f"**{v.verdict}**", f"{v.effect:+.1f}", f"[{v.ci95[0]:+.1f}, {v.ci95[1]:+.1f}]", _fmt(v.p),
          _fmt(v.p_holm), v.test] for v in claims],
    )  # fmt: skip
    return md


def report(cfg, systems: dict[str, System], chance, best_q: int, claims, source_err, seconds) -> str:
    """Write ``<out>/report.md``, ``<out>/summary.json`` and ``<out>/map.png``; returns the markdown."""

    k = len(toy.SOURCE_CLASSES)
    c = 100 * np.asarray(chance)
    md = "# vggfeat demo: appendix B in miniature (toy source -> toy VOC2007 target)\n\n"
    md += f"Data seed {cfg.seed}; training seeds {', '.join(map(str, cfg.seeds))}.\n\n"
    md += _tables(cfg, systems, chance, best_q, claims)
    md += (
        f"\nA claim **holds** when its 95% interval lies above 0; the intervals carry the seed spread "
        f"(t-quantiles) and the test images' sampling (bootstrap, {cfg.bootstrap} resamples). "
        f"{len(claims)} claims are tested together: Holm's adjusted p is given beside each.\n\n"
        f"- Source task ({k} shape-texture classes, chance {100 * chance_topk(k):.1f}%): validation "
        f"top-1 error per seed {', '.join(f'{100 * e:.1f}%' for e in source_err)} "
        f"(mean {100 * np.mean(source_err):.1f}%), each at the end of its annealed schedule.\n"
        f"- Best single Q (on val): {best_q}.\n"
        "- Wall time per step (s): " + ", ".join(f"{n} {v:.0f}" for n, v in seconds.items()) + ".\n\n"
        "![target mAP](map.png)\n\n"
        f"Training curves, seed {cfg.seeds[0]}: source ![curves](source-s{cfg.seeds[0]}/curves.png) "
        f"from scratch ![curves](scratch-s{cfg.seeds[0]}/curves.png)\n"
    )
    _write(cfg.out / "report.md", md)
    means = {n: stats.per_seed(s.maps()) for n, s in systems.items()}
    summary = {
        "chance_map": float(c.mean()),
        "chance_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
        "rows": [
            {"name": n, "map": m["mean"], "std": m["std"], "q": systems[n].q, "per_seed": m["per_seed"]}
            for n, m in means.items()
        ],
        "source": {
            "val_top1_err": [100 * e for e in source_err],
            "chance_top1_err": 100 * chance_topk(k),
        },
        "best_single_q": best_q,
        "claims": [{key: v.as_dict()[key] for key in CLAIM_FIELDS} for v in claims],
        "verdicts": [{"claim": v.claim, "verdict": v.verdict} for v in claims],
        "seeds": list(cfg.seeds),
        "data_seed": cfg.seed,
    }  # fmt: skip
    _write(cfg.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    plots.bar_chart(
        cfg.out / "map.png",
        {n: m["mean"] / 100 for n, m in means.items()},
        errors={n: m["std"] / 100 for n, m in means.items()},
        bands={"chance (± std)": (c.mean() / 100, c.std(ddof=1) / 100 if len(c) > 1 else 0.0)},
        title="target test mAP (mean ± std over seeds)",
        ylabel="mAP (%)",
    )
    return md
