"""Sec. 3.2 and 4: class posteriors by dense and multi-crop evaluation, fusion, top-k error.

- dense: the class-score map of the whole image rescaled to Q is spatially averaged, passed
  through softmax, and averaged with the horizontally flipped image's posterior;
- multicrop: per Q a regular 5x5 grid of 224x224 crops (corners included, evenly spaced) and
  their flips, 50 posteriors averaged (3 scales = 150 crops);
- both: the mean of the dense and multi-crop posteriors (Sec. 4.3: they are complementary);
- several Q: posteriors averaged over scales; several nets: :func:`fuse` averages them (Sec. 4.4).

All of it runs on the one dense engine (:mod:`vggfeat.features.dense`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..features.dense import DenseEngine, default_device
from ..features.precision import resolve
from ..nets.models import VGG
from .paper import ILSVRC_JITTERED

MODES = ("dense", "multicrop", "both")


def scales_for(s=None, *, jitter: tuple[int, int] | None = None, multi: bool = True) -> tuple:
    """Sec. 4.2/4.3 test scales Q for a training scale.

    Fixed S: Q = {S-32, S, S+32} (multi) or Q = S. Jittered S in [Smin, Smax]:
    Q = {Smin, (Smin+Smax)/2, Smax} (multi) or the midpoint.
    """
    if jitter is not None:
        lo, hi = jitter
        mid = (lo + hi) // 2
        return (lo, mid, hi) if multi else (mid,)
    if s is None:
        raise ValueError("give a fixed training scale s or jitter=(Smin, Smax)")
    return (s - 32, s, s + 32) if multi else (s,)


def _softmax_mean(t: torch.Tensor) -> torch.Tensor:
    """(S, F, V, K) class scores -> (K,) mean posterior over scales, flips and views."""
    return torch.softmax(t, dim=-1).mean(dim=(0, 1, 2))


def _softmax_per_scale(t: torch.Tensor) -> torch.Tensor:
    """(S, F, V, K) class scores -> (S * K,): per Q the posterior averaged over flips and views."""
    return torch.softmax(t, dim=-1).mean(dim=(1, 2)).flatten()


def posteriors(
    model: VGG,
    images,
    *,
    scales=(256, 384, 512),
    mode: str = "dense",
    flip=True,
    batch_size=None,
    device=None,
    num_workers=None,
    progress=True,
    image_column=None,
    on_error: str = "raise",
    per_scale: bool = False,
    precision: str = "auto",
) -> np.ndarray:
    """(N, num_classes) float32 softmax posteriors of ``images`` (any input ``extract`` takes);
    with ``on_error="skip"`` unreadable images get NaN rows. ``progress``: a bar, or its label.
    ``per_scale``: (N, len(scales), num_classes), one posterior per Q, from the same one pass.
    ``precision``: as for :func:`vggfeat.extract` ("auto", "fp32", "bf16", "fp16")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    kw = dict(
        scales=scales,
        flip=flip,
        layer="fc8",
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        precision=precision,
    )
    combine, k = (_softmax_per_scale, len(scales)) if per_scale else (_softmax_mean, 1)
    out = []
    for views in {"dense": ["full"], "multicrop": ["grid"], "both": ["full", "grid"]}[mode]:
        engine = DenseEngine(model, views=views, **kw)
        res = engine.run(images, combine, k * model.num_classes, image_column=image_column, on_error=on_error)
        out.append(res.rows.reshape(len(res.rows), len(scales), -1) if per_scale else res.rows)
    return np.mean(out, axis=0).astype(np.float32)


def fuse(posteriors_list: Sequence[np.ndarray]) -> np.ndarray:
    """Sec. 4.4 multi-net fusion: the mean of several nets' softmax posteriors."""
    ps = [np.asarray(p, dtype=np.float64) for p in posteriors_list]
    if not ps or any(p.shape != ps[0].shape for p in ps):
        raise ValueError(f"fuse needs posteriors of one shape, got {[p.shape for p in ps]}")
    return np.mean(ps, axis=0).astype(np.float32)


def topk_error(P: np.ndarray, labels, k: int = 5) -> float:
    """Fraction of images whose true label is not among the k highest posteriors (ties are
    broken towards the lower class index, as a stable argsort does).

    Rows with a NaN (images skipped with ``on_error="skip"``) have no prediction: they are left
    out of the count with a warning saying how many; if every row is NaN there is no error rate
    and the call raises. (Sorting would otherwise rank the NaNs and count some rows correct.)"""
    P, y = np.asarray(P), np.asarray(labels)
    if P.ndim != 2 or len(P) != len(y):
        raise ValueError(f"P must be (N, K) with one label per row; got {P.shape} and {y.shape}")
    missing = np.isnan(P).any(axis=1)
    if missing.all():
        raise ValueError(
            f"all {len(P)} rows of P are NaN (images that could not be read): no error rate; "
            "check the failures reported when the posteriors were computed"
        )
    if missing.any():
        warnings.warn(
            f"topk_error leaves out {int(missing.sum())} of {len(P)} rows with NaN posteriors "
            "(images that could not be read); the error is over the remaining rows",
            RuntimeWarning,
            stacklevel=2,
        )
        P, y = P[~missing], y[~missing]
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]
    return float(1.0 - (top == y[:, None]).any(axis=1).mean())


def per_class_error(P: np.ndarray, labels, k: int = 1) -> np.ndarray:
    """(K,) top-``k`` error of each class over its images (NaN for a class without images); the
    per-class view of :func:`topk_error`, with the same tie rule."""
    P, y = np.asarray(P), np.asarray(labels)
    top = np.argsort(-P, axis=1, kind="stable")[:, :k]
    wrong = ~(top == y[:, None]).any(axis=1)
    counts = np.bincount(y, minlength=P.shape[1]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(y, weights=wrong, minlength=P.shape[1]) / np.where(counts > 0, counts, np.nan)


def labels_of(
    data, label_column: str = "label", *, val_labels=None, val_synsets=None
) -> tuple[list, np.ndarray, list[str]]:
    """Images, integer labels and class names from an ImageFolder tree, ImageNet's flat ``val/``
    as distributed (labelled as the trainer reads it: Kaggle's ``LOC_val_solution.csv`` or the
    devkit's ground truth with ``val_synsets``, found next to the data or given as ``val_labels``;
    classes: the label file's wnids, sorted as the class folders are), a Hugging Face dataset
    (``label_column``, a ClassLabel) or a torch dataset with ``.samples``/``.classes``."""
    from pathlib import Path

    if isinstance(data, (str, Path)):
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} is not a folder; expected an ImageFolder tree ROOT/<class>/<image>.jpg, or "
                "ILSVRC's flat val/ with its label file"
            )
        if not any(p.is_dir() for p in root.iterdir()):
            from ..data.imagefolder import flat_val, val_wnids

            _, wnids = val_wnids(root, labels=val_labels, synsets=val_synsets, near=root)
            data = flat_val(
                root, sorted(set(wnids.values())), labels=val_labels, synsets=val_synsets, near=root
            )
        else:
            from ..data.imagefolder import FolderImages

            data = FolderImages(root).folder
    import datasets

    if isinstance(data, datasets.Dataset):
        if label_column not in data.column_names:
            raise ValueError(f"the dataset has no {label_column!r} column ({data.column_names})")
        feat = data.features[label_column]
        names = list(getattr(feat, "names", []) or [])
        return data, np.array(data[label_column]), names
    if hasattr(data, "samples") and hasattr(data, "classes"):
        return [p for p, _ in data.samples], np.array([t for _, t in data.samples]), list(data.classes)
    raise TypeError(f"cannot read labels from {type(data).__name__}")


def net_labels(labels, classes: list[str], model) -> np.ndarray:
    """``labels`` (indices into ``classes``, the data's class names) as indices of ``model``'s
    outputs: by name when its weights carry ``class_names``; else by position, which is only
    right when the data has exactly the net's classes (an ImageFolder tree with fewer folders
    would otherwise be scored against the wrong outputs), so any other count is refused."""
    names = list(getattr(model, "meta", {}).get("class_names") or [])
    labels = np.asarray(labels)
    if names:
        missing = [c for c in classes if c not in names]
        if missing:
            raise ValueError(
                f"the data's classes {missing[:5]} are not among the {len(names)} class names its "
                "weights were trained with; evaluate on data of the net's own classes"
            )
        return np.array([names.index(c) for c in classes])[labels] if len(labels) else labels
    if classes and len(classes) != model.num_classes:
        raise ValueError(
            f"the data has {len(classes)} classes but VGG-{model.config} has {model.num_classes} outputs, "
            "and its weights name no classes: labelling by folder index would score the wrong outputs. "
            "Evaluate on every class (e.g. the full ILSVRC val), or with weights that carry class_names"
        )
    return labels


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
    import time

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
