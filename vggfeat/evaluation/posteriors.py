"""Sec. 3.2 and 4: class posteriors by dense and multi-crop evaluation, fusion, top-k error.

- dense: the class-score map of the whole image rescaled to Q is spatially averaged, passed
  through softmax, and averaged with the horizontally flipped image's posterior;
- multicrop: per Q a regular 5x5 grid of 224x224 crops (corners included, evenly spaced) and
  their flips, 50 posteriors averaged (3 scales = 150 crops);
- both: the mean of the dense and multi-crop posteriors (Sec. 4.3: they are complementary);
- several Q: posteriors averaged over scales; several nets: :func:`fuse` averages them (Sec. 4.4).

All of it runs on the one dense engine (:mod:`vggfeat.features.dense`); the protocols of
Tables 3-6 built from these are :mod:`vggfeat.evaluation.ilsvrc`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.imagefolder import FolderImages, flat_val, val_wnids
from ..features.dense import DenseEngine
from ..nets.models import VGG

MODES = ("dense", "multicrop", "both")


def scales_for(
    s: int | None = None, *, jitter: tuple[int, int] | None = None, multi: bool = True
) -> tuple[int, ...]:
    """The test scales Q of Sec. 4.2 / 4.3 for a net trained at scale S.

    Parameters
    ----------
    s : int, optional
        The fixed training scale S (smallest side, pixels). Needed unless ``jitter`` is given.
    jitter : (int, int), optional
        The range [Smin, Smax] of a scale-jittered net; takes precedence over ``s``.
    multi : bool, default True
        Several Q (Sec. 4.2) rather than one (Sec. 4.1).

    Returns
    -------
    tuple of int
        Fixed S: (S - 32, S, S + 32), or (S,). Jittered: (Smin, (Smin + Smax) // 2, Smax), or
        the midpoint alone.

    Raises
    ------
    ValueError
        If neither ``s`` nor ``jitter`` is given.
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
    scales: Sequence[int] = (256, 384, 512),
    mode: str = "dense",
    flip: bool = True,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    progress: bool | str = True,
    image_column: str | None = None,
    on_error: str = "raise",
    per_scale: bool = False,
    precision: str = "auto",
) -> np.ndarray:
    """Softmax class posteriors of ``images`` by Sec. 3.2's dense and multi-crop evaluation.

    Parameters
    ----------
    model : VGG
        The network; its own preprocessing (``model.preprocess``) is applied.
    images
        Any input :func:`vggfeat.extract` takes: a folder, paths, PIL images, arrays, tensors,
        a Hugging Face ``Dataset``.
    scales : sequence of int, default (256, 384, 512)
        The test scales Q (smallest side, pixels); posteriors are averaged over them.
    mode : {"dense", "multicrop", "both"}, default "dense"
        ``dense``: the class-score map of the whole image, spatially averaged. ``multicrop``: a
        5 x 5 grid of crops of the net's training size per Q. ``both``: the mean of the two.
    flip : bool, default True
        Average with the horizontally flipped image's posterior.
    batch_size : int, optional
        Images per forward pass (default 4 on CPU, 32 on CUDA, an eighth of that for
        multi-crop); never changes the result.
    device : str or torch.device, optional
        Where the net runs (default: CUDA if available, else CPU).
    num_workers : int, optional
        DataLoader decoding workers (default: none below 8 images, else up to 2).
    progress : bool or str, default True
        A progress bar (on the main process); a string is its label.
    image_column : str, optional
        The image column of a Hugging Face ``Dataset`` (default: its first Image column).
    on_error : {"raise", "skip"}, default "raise"
        ``skip``: an unreadable image gets a row of NaN instead of stopping the run.
    per_scale : bool, default False
        One posterior per Q from the same pass, instead of their mean.
    precision : {"auto", "fp32", "bf16", "fp16"}, default "auto"
        What the net computes in (see :func:`vggfeat.extract`).

    Returns
    -------
    numpy.ndarray
        float32, (N, num_classes), or (N, len(scales), num_classes) with ``per_scale``; rows
        in input order.

    Raises
    ------
    ValueError
        If ``mode`` is unknown, or an option is out of range (from the dense engine).
    vggfeat.errors.ImageError
        If an image cannot be decoded and ``on_error="raise"``.
    """
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
    """Sec. 4.4's multi-net fusion: the mean of several nets' softmax posteriors.

    Parameters
    ----------
    posteriors_list : sequence of numpy.ndarray
        The posteriors of each net on the same images, all of one shape (N, K).

    Returns
    -------
    numpy.ndarray
        float32, (N, K).

    Raises
    ------
    ValueError
        If the list is empty or the shapes differ.
    """
    ps = [np.asarray(p, dtype=np.float64) for p in posteriors_list]
    if not ps or any(p.shape != ps[0].shape for p in ps):
        raise ValueError(f"fuse needs posteriors of one shape, got {[p.shape for p in ps]}")
    return np.mean(ps, axis=0).astype(np.float32)


def topk_error(P: np.ndarray, labels: Sequence[int] | np.ndarray, k: int = 5) -> float:
    """The top-k error: the fraction of images whose label is not among the k highest posteriors.

    Parameters
    ----------
    P : numpy.ndarray, shape (N, K)
        Posteriors (or any scores), one row per image.
    labels : sequence of int, shape (N,)
        The true class index of each row.
    k : int, default 5

    Returns
    -------
    float
        A fraction in [0, 1]. Ties are broken towards the lower class index (a stable argsort).
        Rows with a NaN (images skipped with ``on_error="skip"``) have no prediction: they are
        left out, with a warning saying how many.

    Raises
    ------
    ValueError
        If ``P`` is not (N, K) with one label per row, or every row is NaN.
    """
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

    if isinstance(data, (str, Path)):
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} is not a folder; expected an ImageFolder tree ROOT/<class>/<image>.jpg, or "
                "ILSVRC's flat val/ with its label file"
            )
        if not any(p.is_dir() for p in root.iterdir()):
            _, wnids = val_wnids(root, labels=val_labels, synsets=val_synsets, near=root)
            data = flat_val(
                root, sorted(set(wnids.values())), labels=val_labels, synsets=val_synsets, near=root
            )
        else:
            data = FolderImages(root).folder
    import datasets  # deferred: datasets costs seconds to import

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
