"""``Dataset.map`` batches as the extractor meets them: telling a batch from one image, finding
its image column, and naming the feature columns a call adds."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image


def column_names(ext, column: str = "features") -> list[str]:
    """Dataset columns of an extractor's rows (``ext``: its ``layer`` and ``layers``): ``column``, or
    ``column_<layer>`` for several layers."""
    return [column] if isinstance(ext.layer, str) else [f"{column}_{name}" for name in ext.layers]


def feature_columns(ext, rows, column: str = "features") -> dict:
    """The rows of one call (an array, or a dict per layer) as dataset columns."""
    per_layer = [rows] if isinstance(ext.layer, str) else [rows[name] for name in ext.layers]
    return dict(zip(column_names(ext, column), per_layer))


def is_batch(images) -> bool:
    """A ``Dataset.map(batched=True)`` batch: a mapping of columns, each a list of values (not
    one undecoded image, ``{"bytes": ..., "path": ...}``)."""
    if not isinstance(images, Mapping):
        return False
    return not set(images) <= {"bytes", "path"} or isinstance(next(iter(images.values()), None), list)


def _one_value(v) -> bool:
    """A column value of one row (an image, a path, a number), not a batch's list of them."""
    if isinstance(v, (np.ndarray, torch.Tensor)):
        return v.ndim == 0
    return v is None or isinstance(v, (Image.Image, Mapping, str, bytes, int, float, bool, np.generic))


def batch_column(batch, image_column: str | None) -> str:
    """The column of a ``Dataset.map`` batch that holds the images: ``image_column``, else the
    first whose values are images (decoded, undecoded, arrays, tensors or paths)."""
    row = [name for name, v in batch.items() if _one_value(v)]
    if row:
        raise TypeError(
            f"the Extractor got one row of a dataset (its column {row[0]!r} holds a single value, not "
            "a list): map it with batched=True, ds.map(extractor, batched=True)"
        )
    if image_column is not None:
        if image_column not in batch:
            raise KeyError(f"image_column {image_column!r} is not in the batch {list(batch)}")
        return image_column
    for name, values in batch.items():
        if len(values) and isinstance(values[0], (Image.Image, dict, np.ndarray, torch.Tensor, str)):
            return name
    raise ValueError(
        f"no column of this batch holds images (columns: {list(batch)}); pass image_column= to the Extractor"
    )
