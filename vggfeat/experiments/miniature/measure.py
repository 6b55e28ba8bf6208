"""What the paper in miniature measures: posteriors of every net on the source val split (Tables
3-6, Sec. 3.2 and 4) and the appendix-B transfer to the toy VOC target (Table 11), each result
with what its bootstrap over images needs (per-image top-1 misses, per-image test scores)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ...data import voc
from ...evaluation import svm
from ...evaluation.chance import chance_map
from ...evaluation.ilsvrc import run_protocols
from ...evaluation.posteriors import fuse, topk_error
from ...evaluation.posteriors import posteriors as per_q
from ...features.distributed import process_state
from ...nets.models import paper_scales
from ...weights.loader import vgg
from .. import appendix_b
from .runs import MiniatureConfig, Net, kind, sha256

log = logging.getLogger("vggfeat")
MULTICROP = ("D", "E")  # Table 5's nets (jittered): multi-crop and dense & multi-crop


def eval_scales(cfg: MiniatureConfig, net: Net) -> tuple[tuple[int, ...], int]:
    """Sec. 4.1-4.2: (multi-scale Q, single Q). Fixed S: {S-32, S, S+32} and S; jittered
    S in [Smin, Smax]: {Smin, mid, Smax} and mid; all in the paper's ratios to the crop."""
    qs = paper_scales(cfg.crop, (256, 384, 512) if net.jitter else (224, 256, 288))
    return qs, qs[1]


def posteriors(cfg: MiniatureConfig, weights: Path, images, views: str, scales) -> np.ndarray:
    """(N, len(scales), K) posteriors of the net ``weights`` per Q, dense (``views="full"``) or
    multi-crop (``"grid"``: 5x5 crops of the net's own crop size, Sec. 3.2), in one pass over
    the images; cached in ``<out>/posteriors/<run>-<views>.npz`` under the hashes of the weights
    and of the image list."""

    path = cfg.out / "posteriors" / f"{weights.parent.name}-{views}.npz"
    names = hashlib.sha256("\n".join(map(str, images)).encode()).hexdigest()
    key = f"{sha256(weights)}-{names}-{list(scales)}"
    if path.exists() and not cfg.fresh:
        with np.load(path) as z:
            if str(z["key"]) == key:
                return z["P"]
    log.info("%s: %s posteriors at Q = %s", weights.parent.name, views, list(scales))
    model = vgg(None, weights=str(weights))
    batch = 8 if views == "grid" else None  # grid: 8 images = 400 crops per forward (2x faster than 1)
    mode = {"full": "dense", "grid": "multicrop"}[views]
    P = per_q(
        model,
        images,
        scales=scales,
        mode=mode,
        per_scale=True,
        batch_size=batch,
        progress=cfg.progress,
        num_workers=cfg.num_workers,
        precision="fp32",  # pinned: the verdicts were made in fp32
    )
    if process_state().is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=key, P=P)
    return P


def protocols(cfg: MiniatureConfig, net: Net, weights: Path, images, y) -> dict:
    """Tables 3-5 for one net by :func:`evaluate.run_protocols` on the cached per-Q posteriors:
    protocol -> (N, K) posteriors. Every net gets ``single`` (dense, one Q); the jittered nets
    also ``multi`` (dense, three Q: Table 4's claims are on them), jittered D and E also
    ``multicrop`` (three Q) and ``both`` (Sec. 4.3: the mean of the multi-scale dense and
    multi-crop posteriors)."""

    asked = ("single",)
    if net.jitter:
        asked += ("multi", "multicrop", "both") if net.config in MULTICROP else ("multi",)
    views = {"dense": "full", "multicrop": "grid"}
    _, P = run_protocols(
        {net.name: weights},
        images,
        y,
        protocols=asked,
        scales={net.name: eval_scales(cfg, net)},
        engine=lambda _, mode, qs: posteriors(cfg, weights, images, views[mode], qs),
        precision="fp32",
    )
    return {proto: P[net.name, proto] for proto in asked}


def wrong(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) bool: top-1 misses (the first of tied maxima wins, as :func:`evaluate.topk_error`)."""
    return np.argmax(P, axis=1) != y


def _result(P: np.ndarray, y: np.ndarray) -> dict:

    return dict(P=P, wrong=wrong(P, y), value=100 * topk_error(P, y, 1), top5=100 * topk_error(P, y, 5))


def classification(cfg: MiniatureConfig, nets: list[Net], weights: dict, images, y) -> dict:
    """``{(net kind, protocol): [result per seed]}`` on the val split (Tables 3-6), plus derived
    systems: ``best-of`` (the better of multi-scale dense and multi-crop), the ``fusion`` of D
    and E (their ``both`` posteriors, Sec. 4.4) and ``best-single`` (the better of those two)."""

    systems: dict = {}
    for net in nets:
        for proto, P in protocols(cfg, net, weights[net.name], images, y).items():
            systems.setdefault((kind(net.name), proto), []).append(_result(P, y))

    def best(*keys):
        return systems[min(keys, key=lambda k: np.mean([r["value"] for r in systems[k]]))]

    for c in MULTICROP:
        if (f"{c}-jitter", "both") in systems:
            systems[(f"{c}-jitter", "best-of")] = best((f"{c}-jitter", "multi"), (f"{c}-jitter", "multicrop"))
    if all((f"{c}-jitter", "both") in systems for c in "DE"):
        pairs = zip(systems[("D-jitter", "both")], systems[("E-jitter", "both")])
        systems[("D&E-jitter", "fusion")] = [_result(fuse([d["P"], e["P"]]), y) for d, e in pairs]
        systems[("D&E-jitter", "best-single")] = best(("D-jitter", "both"), ("E-jitter", "both"))
    return systems


def transfer(cfg: MiniatureConfig, weights: dict, devkit: Path) -> tuple[dict, np.ndarray, tuple]:
    """Table 11 on the toy VOC2007 target: ``{(net, "transfer"): [result per deep seed]}`` for A
    (fixed S, the shallow reference), B-fromA and D-fixed (the depth claim: both from A, fixed
    S), D and E (jittered) and D & E (descriptors stacked); the
    test labels; the chance mAP (mean, std over permutations of the test scores). Descriptor:
    appendix B, averaged over Q = paper_scales(c); SVMs by the VOC2007 protocol."""

    data = appendix_b.load_target(devkit)
    proto = voc.protocol(data)
    systems: dict = {}

    def add(name, X):
        res = svm.voc_classification(X, data.labels, proto)
        systems.setdefault((name, "transfer"), []).append(dict(scores=res.scores, value=100 * res.map))

    for s in cfg.deep_seeds:
        X = {}
        for name, run in (
            ("A", f"A-fixed-s{s}"), ("B-fromA", f"B-fromA-fixed-s{s}"), ("D-fixed", f"D-fixed-s{s}"),
            ("D", f"D-jitter-s{s}"), ("E", f"E-jitter-s{s}"),
        ):  # fmt: skip
            if run not in weights:  # B-fromA and D-fixed for the seeds of both only
                continue
            store = cfg.out / "features" / run  # a feature store holds one net's rows
            D, _ = appendix_b.per_scale_descriptors(
                weights[run], data.images, store, cfg.progress, qs=(256, 384, 512)
            )
            X[name] = appendix_b.l2(D.mean(axis=1))
            add(name, X[name])
        add("D&E", appendix_b.l2(np.hstack([X["D"], X["E"]])))  # appendix B: late fusion by stacking
    d_or_e = max("DE", key=lambda n: np.mean([r["value"] for r in systems[(n, "transfer")]]))
    systems[("best-of-D-E", "transfer")] = systems[(d_or_e, "transfer")]
    chance = chance_map(data.labels[proto.test], permutations=cfg.permutations, ap=proto.ap)
    return systems, data.labels[proto.test], chance
