"""A writer of binary ``.caffemodel`` files in both encodings (V1 ``layers`` and ``layer``), so
the Caffe import is tested on files in the release's wire format without Caffe installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggfeat.weights.caffe import I32, I64, LEN, VARINT

# V1LayerParameter.LayerType enum values (caffe.proto) of the layers the writer emits.
V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Pooling": 17, "ReLU": 18, "Dropout": 6, "Softmax": 20}


def _key(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int32/int64 are written as 10-byte two's complement
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _len(field: int, payload: bytes) -> bytes:
    return _key(field, LEN) + _enc_varint(len(payload)) + payload


def _enc_blob(arr: np.ndarray, *, nchw: bool, packed: bool, double: bool) -> bytes:
    if nchw:  # legacy 4-d shape, leading 1s as old Caffe wrote fc weights and biases
        if arr.ndim > 4:
            raise ValueError(f"shape_style='nchw' needs blobs of at most 4 dims, got shape {arr.shape}")
        dims = (1,) * (4 - arr.ndim) + arr.shape
        out = b"".join(_key(i, VARINT) + _enc_varint(d) for i, d in zip((1, 2, 3, 4), dims))
    else:
        out = _len(7, _len(1, b"".join(_enc_varint(d) for d in arr.shape)))
    field, wire, fmt = (8, I64, "<f8") if double else (5, I32, "<f4")
    flat = np.ascontiguousarray(arr, dtype=fmt).ravel()
    if packed:
        return out + _len(field, flat.tobytes())
    rec = np.zeros(flat.size, dtype=[("key", "u1"), ("v", fmt)])
    rec["key"], rec["v"] = field << 3 | wire, flat
    return out + rec.tobytes()


def _enc_layer(name: str, kind: str, blobs: list[bytes], bottom: str, *, v1: bool) -> bytes:
    top = bottom if kind in ("ReLU", "Dropout") else name  # Caffe runs these in place
    if v1:  # bottom = 2, top = 3, name = 4, type = 5 (enum), blobs = 6
        head = _len(2, bottom.encode()) + _len(3, top.encode()) + _len(4, name.encode())
        return head + _key(5, VARINT) + _enc_varint(V1_TYPES[kind]) + b"".join(_len(6, b) for b in blobs)
    # name = 1, type = 2 (string), bottom = 3, top = 4, blobs = 7
    head = _len(1, name.encode()) + _len(2, kind.encode()) + _len(3, bottom.encode()) + _len(4, top.encode())
    return head + b"".join(_len(7, b) for b in blobs)


def _with_blobless(names: list[str]) -> list[tuple[str, str, str]]:
    """(layer, type, bottom) in the order of the real files: a ReLU after every weight layer,
    a Pooling layer closing each conv block, Dropout after fc6/fc7, Softmax "prob" last."""
    seq, bottom = [], "data"
    for i, name in enumerate(names):
        kind = "Convolution" if name.startswith("conv") else "InnerProduct" if name.startswith("fc") else None
        if kind is None:
            raise ValueError(f"layer {name!r}: names must start with 'conv' or 'fc'")
        seq.append((name, kind, bottom))
        bottom, tag = name, name.removeprefix("conv").removeprefix("fc")
        if i == len(names) - 1:
            seq.append(("prob", "Softmax", bottom))
            break
        seq.append((f"relu{tag}", "ReLU", bottom))
        if kind == "InnerProduct":
            seq.append((f"drop{tag}", "Dropout", bottom))
        elif names[i + 1].split("_")[0] != name.split("_")[0]:
            block = name.split("_")[0].removeprefix("conv")
            seq.append((f"pool{block}", "Pooling", bottom))
            bottom = f"pool{block}"
    return seq


def write_caffemodel(
    path,
    layers,
    *,
    encoding: str = "layer",
    shape_style: str = "shape",
    packed: bool = True,
    double: bool = False,
    name: str = "VGG",
) -> Path:
    """Write ``[(name, [weight, bias]), ...]`` as a binary NetParameter, for tests and interop.

    Layers named ``conv*`` become Convolution, ``fc*`` InnerProduct, interleaved with blob-less
    ReLU, Pooling, Dropout and Softmax layers as in the real files. ``encoding``: ``"layer"``
    (LayerParameter, string types) or ``"v1"`` (V1LayerParameter, enum types). ``shape_style``:
    ``"shape"`` (BlobShape dims as given) or ``"nchw"`` (legacy num/channels/height/width with
    leading 1s: fc weights (1, 1, out, in), biases (1, 1, 1, n), as old Caffe wrote them).
    ``packed=False`` writes non-packed repeated values; ``double=True`` uses ``double_data``.
    """
    if encoding not in ("layer", "v1"):
        raise ValueError(f"encoding must be 'layer' or 'v1', got {encoding!r}")
    if shape_style not in ("shape", "nchw"):
        raise ValueError(f"shape_style must be 'shape' or 'nchw', got {shape_style!r}")
    v1 = encoding == "v1"
    blobs = {
        lname: [
            _enc_blob(np.asarray(a), nchw=shape_style == "nchw", packed=packed, double=double) for a in arrays
        ]
        for lname, arrays in layers
    }
    out = [_len(1, name.encode())]
    for lname, kind, bottom in _with_blobless([n for n, _ in layers]):
        layer = _enc_layer(lname, kind, blobs.get(lname, []), bottom, v1=v1)
        out.append(_len(2 if v1 else 100, layer))
    path = Path(path)
    path.write_bytes(b"".join(out))
    return path
