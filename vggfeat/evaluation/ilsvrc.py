"""The test protocols of Tables 3-6 (Sec. 3.2, 4) on a labelled set: dense at one and three Q,
multi-crop, both, and the fusion of nets, each net's passes run once.

This is the public module ``vggfeat.evaluate``: it also gathers the posteriors and top-k errors
of :mod:`vggfeat.evaluation.posteriors` that the protocols are made of."""

from __future__ import annotations

import time

from ..features.dense import default_device
from ..features.precision import resolve
from .paper import ILSVRC_JITTERED
from .posteriors import (
    MODES,
    fuse,
    labels_of,
    net_labels,
    per_class_error,
    posteriors,
    scales_for,
    topk_error,
)

__all__ = [
    "PROTOCOLS", "run_protocols",
    # the posteriors they are made of (evaluation.posteriors)
    "MODES", "posteriors", "fuse", "topk_error", "per_class_error", "scales_for", "labels_of", "net_labels",
]  # fmt: skip


PROTOCOLS = ("single", "multi", "multicrop", "both", "fusion")


def run_protocols(
    models: dict,
    images,
    labels,
    *,
    protocols=PROTOCOLS,
    jitter=(256, 512),
    scales: dict | None = None,
    engine=None,
    progress: bool = True,
    precision: str = "auto",
    **kw,
) -> tuple[list[dict], dict]:
    """The Sec. 3.2 test protocols of Tables 3-6 for each named net (``{"D": model, ...}``).

    - ``single``: dense evaluation at one Q (Table 3);
    - ``multi``: dense, the posteriors averaged over three Q (Table 4);
    - ``multicrop``: 150 crops, 50 per Q at the same three Q (Table 5);
    - ``both``: the mean of the ``multi`` and ``multicrop`` posteriors (Table 5);
    - ``fusion``: the mean of the nets' ``both`` posteriors (``multi`` without it; Sec. 4.4).

    Q: ``scales[name] = (three Q, single Q)``, else Sec. 4.2-4.3's from ``jitter`` (Smin, mid,
    Smax and mid); the single Q must be one of the three. Each net's dense and multi-crop
    evaluation each run once, however many protocols use them: ``single`` and ``multi`` read one
    per-Q dense pass. ``engine(name, mode, qs)`` -> (N, len(qs), K) per-Q posteriors replaces
    :func:`posteriors` (``per_scale=True``, with ``kw``), e.g. to cache them. ``precision``
    ("auto", "fp32", "bf16", "fp16") is what :func:`posteriors` runs in, resolved once for the
    device (``kw["device"]``) and reported in every row; a given ``engine`` runs in its own
    (the rows then say ``precision`` as given).

    Returns rows ``{model, protocol, scales, top1, top5, paper_top1, paper_top5,
    seconds_per_image, precision}`` (the seconds of the evaluation runs a protocol reads, ``None`` for
    fusion) and ``{(model, protocol): (N, K) posteriors}``."""
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"protocols: unknown {bad}; choose from {','.join(PROTOCOLS)}")
    if engine is not None:
        ran = precision
    else:
        ran = resolve(precision, default_device(kw.get("device"))).name
        readers = {"dense": ("single", "multi", "both"), "multicrop": ("multicrop", "both")}

        def engine(name, mode, qs):  # the bar names the protocols this one run serves
            serves = ",".join(p for p in protocols if p in readers[mode])
            bar = f"{name} {serves}: {mode} at Q={','.join(map(str, qs))}" if progress else False
            return posteriors(
                models[name], images, scales=qs, mode=mode, per_scale=True, progress=bar, precision=ran, **kw
            )

    qs_of = dict.fromkeys(models, (scales_for(jitter=jitter), scales_for(jitter=jitter, multi=False)[0]))
    qs_of |= scales or {}
    rows, kept = [], {}
    for name in models:
        qs, single = qs_of[name]
        if single not in qs:
            raise ValueError(f"scales[{name!r}]: the single Q {single} must be one of the three {qs}")
        for proto, P, q, secs in _net_protocols(name, engine, protocols, qs, single, len(labels)):
            kept[name, proto] = P
            rows.append(_row(name, proto, q, P, labels, secs) | {"precision": ran})
    if "fusion" in protocols and len(models) > 1:
        base = "both" if "both" in protocols else "multi"
        parts = [kept[n, base] for n in models if (n, base) in kept]
        if len(parts) < 2:
            raise ValueError("protocols: fusion needs 'both' or 'multi' of at least two nets")
        kept["&".join(models), "fusion"] = P = fuse(parts)
        fused = _row("&".join(models), "fusion", qs_of[next(iter(models))][0], P, labels, None)
        rows.append(fused | {"precision": ran})
    return rows, kept


def _net_protocols(name, engine, protocols, qs, single, n):
    """(protocol, posteriors, Q, seconds per image) of one net, each engine mode run once."""

    runs = {}  # mode -> (per-Q posteriors, seconds per image)
    # single alone needs its one Q only; with multi or both it reads that Q of their dense pass
    dense_qs = qs if {"multi", "both"} & set(protocols) else (single,)

    def run(mode):
        if mode not in runs:
            t0 = time.perf_counter()
            P = engine(name, mode, dense_qs if mode == "dense" else qs)
            runs[mode] = P, (time.perf_counter() - t0) / max(1, n)
        return runs[mode]

    for proto in [p for p in protocols if p != "fusion"]:
        if proto == "single":
            (D, secs), i = run("dense"), dense_qs.index(single)
            yield proto, D[:, i], (single,), secs
        elif proto == "multi":
            D, secs = run("dense")
            yield proto, D.mean(axis=1), qs, secs
        elif proto == "multicrop":
            G, secs = run("multicrop")
            yield proto, G.mean(axis=1), qs, secs
        else:  # both: Sec. 4.3, dense and multi-crop are complementary
            (D, dt), (G, gt) = run("dense"), run("multicrop")
            yield proto, fuse([D.mean(axis=1), G.mean(axis=1)]), qs, dt + gt


def _row(name, proto, scales, P, labels, secs) -> dict:
    paper = ILSVRC_JITTERED.get(proto, {}).get(name.upper(), (None, None))
    return {
        "model": name,
        "protocol": proto,
        "scales": list(scales),
        "top1": 100 * topk_error(P, labels, 1),
        "top5": 100 * topk_error(P, labels, 5),
        "paper_top1": paper[0],
        "paper_top5": paper[1],
        "seconds_per_image": secs,
    }
