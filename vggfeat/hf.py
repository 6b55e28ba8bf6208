"""Hugging Face datasets: add appendix-B descriptors as a column, reproducibly."""

from __future__ import annotations

import hashlib
import json

from .extract import Extractor


def add_features(ds, *, column: str = "vgg_features", image_column: str | None = None, **extract_kwargs):
    """Return ``ds`` with a ``column`` of float32 descriptors (one list per row).

    ``extract_kwargs`` are :func:`vggfeat.extract`'s. The new fingerprint is derived from the
    dataset's fingerprint, the weights' fingerprints and every protocol parameter, so the same
    call gives the same fingerprint (and ``datasets`` caching works) while other weights or
    parameters never collide.
    """
    ext = Extractor(image_column=image_column, **extract_kwargs)
    X = ext(ds)
    key = json.dumps({"base": ds._fingerprint, "column": column, **ext.protocol()}, sort_keys=True)
    fp = hashlib.sha256(key.encode()).hexdigest()[:16]
    return ds.add_column(column, list(X), new_fingerprint=fp)
