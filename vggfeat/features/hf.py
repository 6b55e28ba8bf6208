"""Hugging Face datasets: add appendix-B descriptors as a column, streaming and reproducibly.

:func:`add_features` runs the extractor through ``Dataset.map(batched=True)``: a batch of rows
at a time, the rows written to Arrow (on disk for a dataset read from disk), so memory stays flat
in the number of images. The images reach the extractor undecoded (``Image(decode=False)``) and
are decoded by vggfeat's one decoder, in its DataLoader workers; their keys in a feature store
are the encoded bytes, as for ``extract(ds)``. An ``IterableDataset`` is mapped lazily: rows are
computed as they are read.

Under several ranks (``accelerate launch``) every rank computes its share of each map batch and
the main process alone writes the Arrow file (:func:`_map_once`).

The plain recipe needs no helper: ``ds.map(Extractor(...), batched=True)`` adds a
``features`` column (:class:`vggfeat.Extractor` takes a batch and returns its columns, with the
helpers of :mod:`vggfeat.features.batches`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

from ..data.decode import as_source, hf_image_column
from .batches import column_names, feature_columns
from .distributed import process_state
from .extract import Extractor
from .notices import warn_at_caller
from .store import image_keys


def add_features(
    ds,
    *,
    column: str = "features",
    image_column: str | None = None,
    map_batch_size: int = 256,
    **extract_kwargs,
):
    """``ds`` with a ``column`` of float32 descriptors (``column_<layer>`` for several layers).
    The default name, ``features``, is the one ``ds.map(Extractor(...), batched=True)`` gives. A
    column of that name already there (a second call) is replaced, with a warning.

    ``ds``: a ``Dataset``, ``DatasetDict`` (each split), ``IterableDataset`` or
    ``IterableDatasetDict`` (mapped lazily, computed as it is iterated). ``extract_kwargs`` are
    :func:`vggfeat.extract`'s; ``map_batch_size`` images go through the network per map batch.

    A ``Dataset``'s new fingerprint comes from public information only: the extractor's
    protocol (weights fingerprints, every parameter) and the digest of every image's encoded
    bytes in row order (the feature store's keys). The same call on the same images gives the
    same fingerprint, so ``datasets`` serves its cached Arrow file instead of recomputing; other
    images, weights or parameters never collide. The other columns are joined back by
    ``concatenate_datasets(axis=1)``, whose fingerprint ``datasets`` derives itself.
    """
    import datasets  # deferred: datasets costs seconds to import

    ext = Extractor(image_column=image_column, **extract_kwargs)
    return _add(datasets, ds, ext, column, map_batch_size)


def _add(datasets, ds, ext: Extractor, column: str, rows: int):
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(ds)({split: _add(datasets, d, ext, column, rows) for split, d in ds.items()})
    if not isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(
            f"add_features takes a datasets Dataset, DatasetDict or IterableDataset, got "
            f"{type(ds).__name__}; for other collections of images call vggfeat.extract"
        )
    if ds.features is None and ext.image_column is None:
        raise ValueError(
            "this IterableDataset does not know its features, so its image column cannot be found; "
            "pass image_column= (or cast the column with datasets.Image() first)"
        )
    col = ext.image_column or hf_image_column(ds)
    ds = _without(ds, column_names(ext, column), col)
    fn = functools.partial(_batch_features, ext=ext, col=col, column=column)
    row = datasets.Sequence(datasets.Value("float32"))
    new = datasets.Features({name: row for name in column_names(ext, column)})
    if isinstance(ds, datasets.IterableDataset):  # lazy: computed as the rows are read
        # images come decoded here (a mapped stream with features does not decode undecoded
        # columns back), so their feature-store keys are those of their pixels
        features = datasets.Features({**ds.features, **new}) if ds.features is not None else None
        return ds.map(fn, batched=True, batch_size=rows, features=features)
    raw = ds.select_columns([col]).cast_column(col, datasets.Image(decode=False))
    identity = _identity(ds, col, ext, column)
    kw = dict(batched=True, batch_size=rows, remove_columns=[col], features=new, new_fingerprint=identity)
    state = process_state()
    if state.num_processes == 1 or not ds.cache_files:  # several ranks in memory: none writes
        feats = raw.map(fn, desc="vggfeat", **kw)
    else:  # the column's own Arrow file beside the dataset's, named by its identity
        folder = os.path.dirname(ds.cache_files[0]["filename"])
        feats = _map_once(datasets, raw, fn, os.path.join(folder, f"vggfeat-{identity}.arrow"), kw, state)
    return datasets.concatenate_datasets([ds, feats], axis=1)


def _without(ds, names: list[str], image_column: str):
    """``ds`` without the columns ``names`` it already has, with a warning: they are replaced."""
    there = [n for n in names if n in (ds.column_names or ())]
    if image_column in there:
        raise ValueError(f"column={image_column!r} is the image column; give the descriptors another name")
    if not there:
        return ds

    warn_at_caller(
        f"add_features: replacing the column(s) {there} the dataset already has with new descriptors"
    )
    return ds.remove_columns(there)


def _map_once(datasets, raw, fn, path: str, kw: dict, state):
    """Several ranks: the extractor shards each map batch over the ranks and gives every rank
    its rows, so all ranks go through the same batches; the main process alone maps and writes
    the Arrow file, the others only compute their shares, then every rank reads the one file.
    Whether the file is already there is decided once, by the main process, for all ranks: one
    rank computing while another reads would leave the first waiting for the second forever."""
    from accelerate.utils import broadcast_object_list  # deferred: accelerate adds to start-up

    done = broadcast_object_list([os.path.exists(path) if state.is_main_process else None])[0]
    if not done:
        if state.is_main_process:
            raw.map(fn, cache_file_name=path, load_from_cache_file=False, desc="vggfeat", **kw)
        else:
            for lo in range(0, len(raw), kw["batch_size"]):
                fn(raw[lo : lo + kw["batch_size"]])  # this rank's share of the batch
        state.wait_for_everyone()
    return datasets.Dataset.from_file(path)


def _batch_features(batch, *, ext: Extractor, col: str, column: str) -> dict:
    return feature_columns(ext, ext(batch[col]), column)


def _identity(ds, col: str, ext: Extractor, column: str) -> str:
    """The feature column's identity: protocol + every image's key in row order (module doc)."""
    h = hashlib.sha256(json.dumps({"column": column, **ext.protocol()}, sort_keys=True).encode())
    source, step = as_source(ds, col), 4096
    for lo in range(0, len(source), step):  # the encoded bytes, read a slice at a time
        h.update("".join(image_keys(source, lo=lo, hi=min(lo + step, len(source)))).encode())
    return h.hexdigest()[:32]
