"""The authors' original Caffe release (VGG_ILSVRC_16_layers / _19_layers.caffemodel, configs D
and E, the models behind the paper's numbers) read without Caffe or the protobuf package.

A ``.caffemodel`` is a binary ``caffe.NetParameter`` protobuf. Only the few fields that hold
weights are decoded; the wire format is small (varint and length-delimited records):

- NetParameter: ``name`` = 1, ``layers`` = 2 (V1LayerParameter, the 2014 release), ``layer`` =
  100 (LayerParameter, Caffe >= 2015).
- LayerParameter: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7. V1LayerParameter:
  ``name`` = 4, ``type`` = 5 (enum), ``blobs`` = 6.
- BlobProto: ``num/channels/height/width`` = 1-4 (legacy 4-d shape), ``data`` = 5 (packed
  float32), ``diff`` = 6 (ignored), ``shape`` = 7 (BlobShape: ``dim`` = 1, packed int64),
  ``double_data`` = 8.

Blob 0 is the weight, blob 1 the bias. Conv weights are (out, in, kh, kw) as in torch; fc6 is
(4096, 25088) (or (1, 1, 4096, 25088) in legacy files) in the C order of the (512, 7, 7) pool5
map, which is torchvision's flatten order, so it reshapes directly onto ``classifier.0``. The
first conv expects BGR input in 0-255 minus the mean pixel: the weights are kept as they are and
the model carries ``Preprocess.caffe()`` instead (set by :func:`vggfeat.load_weights`).
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from ..nets.models import PAPER_CROP, VGG
from .layouts import infer_width

# Wire types of the protobuf encoding.
VARINT, I64, LEN, I32 = 0, 1, 2, 5
CONV_COUNTS = {13: "D", 16: "E"}  # the authors released VGG-16 (D) and VGG-19 (E) only


class _Corrupt(Exception):
    """Internal: the bytes do not follow the wire format (re-raised as WeightsError with the file)."""


# --------------------------------------------------------------------------------------- reading
def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt(f"truncated or malformed varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _next(buf, pos: int, end: int) -> tuple[int, int, int | tuple[int, int], int]:
    """One record at ``pos``: (field number, wire type, value, position after it). ``value`` is
    the integer of a varint, else the (start, stop) byte range of the payload."""
    start = pos
    key, pos = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if wire == VARINT:
        value, pos = _varint(buf, pos, end)
        return field, wire, value, pos
    if wire == LEN:
        n, pos = _varint(buf, pos, end)
    elif wire in (I64, I32):
        n = 8 if wire == I64 else 4
    else:
        raise _Corrupt(f"unsupported wire type {wire} (field {field}) at byte {start}")
    if pos + n > end:
        raise _Corrupt(f"field {field} at byte {start} runs past the end of its message")
    return field, wire, (pos, pos + n), pos + n


def _fields(buf, pos: int, end: int):
    """Yield (field number, wire type, value) for each record of the message in [pos, end)."""
    while pos < end:
        field, wire, value, pos = _next(buf, pos, end)
        yield field, wire, value


def _run(buf, pos: int, end: int, key: int, dtype: str) -> tuple[np.ndarray, int]:
    """Non-packed repeated float/double: a run of (1-byte key, value) records read with one
    strided numpy view instead of a Python loop per number. Returns (values, end of the run)."""
    rec = np.dtype([("key", "u1"), ("v", dtype)])
    n = (end - pos) // rec.itemsize
    arr = np.frombuffer(buf, dtype=rec, count=n, offset=pos)
    stop = np.flatnonzero(arr["key"] != key)
    k = int(stop[0]) if stop.size else n
    return arr["v"][:k].astype(np.float32), pos + k * rec.itemsize


def _packed(buf, start: int, stop: int, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if (stop - start) % size:
        raise _Corrupt(f"packed {dtype} payload at byte {start} is not a multiple of {size} bytes")
    return np.frombuffer(buf, dtype=dtype, count=(stop - start) // size, offset=start).astype(np.float32)


def _varints(buf, start: int, stop: int) -> list[int]:
    out = []
    while start < stop:
        v, start = _varint(buf, start, stop)
        out.append(v)
    return out


def _blob(buf, pos: int, end: int, where: str) -> np.ndarray:
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    while pos < end:
        # Fast path for non-packed repeated data (field 5 as I32 records, key byte 0x2d; field 8 as
        # I64 records, key byte 0x41): vectorised so a large blob costs no Python loop.
        if buf[pos] in (0x2D, 0x41):
            is_float = buf[pos] == 0x2D
            values, pos = _run(buf, pos, end, buf[pos], "<f4" if is_float else "<f8")
            (floats if is_float else doubles).append(values)
            continue
        field, wire, value, pos = _next(buf, pos, end)
        if field in (1, 2, 3, 4) and wire == VARINT:
            legacy[field] = value
        elif field == 5 and wire == LEN:
            floats.append(_packed(buf, *value, "<f4"))
        elif field == 8 and wire == LEN:
            doubles.append(_packed(buf, *value, "<f8"))
        elif field == 7 and wire == LEN:
            shape = []
            for f, w, v in _fields(buf, *value):
                if f == 1:
                    shape += [v] if w == VARINT else _varints(buf, *v)
    data = np.concatenate(floats or doubles) if (floats or doubles) else np.zeros(0, np.float32)
    if shape is None:  # legacy blobs declare (num, channels, height, width), proto default 0
        shape = [legacy.get(i, 0) for i in (1, 2, 3, 4)] if legacy else [data.size]
    if int(np.prod(shape)) != data.size:
        raise _Corrupt(
            f"{where} declares shape {tuple(shape)} ({int(np.prod(shape))} values) but holds "
            f"{data.size} values"
        )
    return data.reshape(shape)


def _layer(buf, start: int, stop: int, v1: bool) -> tuple[str, list[np.ndarray]]:
    name_f, blobs_f = (4, 6) if v1 else (1, 7)
    name, blobs = "", []
    for field, wire, value in _fields(buf, start, stop):
        if field == name_f and wire == LEN:
            name = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
        elif field == blobs_f and wire == LEN:
            blobs.append(_blob(buf, *value, where=f"layer {name!r} blob {len(blobs)}"))
        elif v1 and field == 1 and wire == LEN:
            raise _Corrupt(
                "it uses Caffe's pre-2014 V0 layer format; convert it with Caffe's "
                "tools/upgrade_net_proto_binary first"
            )
    return name, blobs


def read_caffemodel(path) -> list[tuple[str, list[np.ndarray]]]:
    """Parse a binary ``.caffemodel`` (``layer`` or V1 ``layers`` encoding).

    Returns ``[(layer name, [weight, bias, ...]), ...]`` for the layers that hold blobs, in file
    order, each blob a float32 array of its declared shape (``BlobShape.dim`` when present, else
    legacy (num, channels, height, width)). The file is memory-mapped and each blob's payload is
    decoded by one ``numpy.frombuffer``: a 528 MB file shaped like VGG-16 reads in 1.0 s (warm
    page cache, one CPU core).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise WeightsError(
            f"cannot open Caffe weights {path}: {e.strerror}; pass the path of "
            "VGG_ILSVRC_16_layers.caffemodel or VGG_ILSVRC_19_layers.caffemodel"
        ) from None
    with f:
        size = path.stat().st_size
        if size == 0:
            raise WeightsError(f"Caffe weights file {path} is empty; download it again")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                layers = []
                for field, wire, value in _fields(buf, 0, size):
                    if field in (2, 100) and wire == LEN:
                        name, blobs = _layer(buf, *value, v1=field == 2)
                        if blobs:
                            layers.append((name, blobs))
            except _Corrupt as e:
                raise WeightsError(
                    f"{path} is not a weights file, or a damaged .caffemodel ({e}); vggfeat reads "
                    ".safetensors, torchvision/timm .pth state dicts, Caffe .caffemodel. A "
                    ".caffemodel that fails so is truncated or corrupt: download it again."
                ) from None
    if not layers:
        raise WeightsError(
            f"{path} is not a weights file: it holds no layer with weights; vggfeat reads "
            ".safetensors, torchvision/timm .pth state dicts, Caffe .caffemodel (binary: a "
            ".prototxt holds no weights)"
        )
    return layers


# --------------------------------------------------------------------------------------- mapping
def _split(layers, source) -> tuple[list, list]:
    """Layers by role, in file order: conv* and fc* (the names of the original release)."""
    convs = [(n, b) for n, b in layers if n.startswith("conv")]
    fcs = [(n, b) for n, b in layers if n.startswith("fc")]
    other = [n for n, _ in layers if not n.startswith(("conv", "fc"))]
    if other or len(fcs) != 3:
        raise WeightsError(
            f"Caffe weights {source}: expected layers conv*_* and fc6/fc7/fc8 as in the VGG release, "
            f"found {[n for n, _ in layers]}; rename the layers of a fine-tuned net accordingly"
        )
    for name, blobs in convs + fcs:
        if len(blobs) != 2:
            raise WeightsError(
                f"Caffe weights {source}: layer {name} has {len(blobs)} blobs, expected 2 (weight and bias)"
            )
    return convs, fcs


def infer_caffe_config(layers) -> str:
    """``"D"`` (13 conv layers, VGG_ILSVRC_16_layers) or ``"E"`` (16, VGG_ILSVRC_19_layers)."""
    convs = [n for n, _ in layers if n.startswith("conv")]
    if len(convs) not in CONV_COUNTS:
        raise WeightsError(
            f"found {len(convs)} conv layers ({', '.join(convs) or 'none'}) among layers "
            f"{[n for n, _ in layers]}; the Caffe release has 13 (VGG-16, config D) or 16 (VGG-19, "
            "config E)"
        )
    return CONV_COUNTS[len(convs)]


def infer_caffe_arch(layers) -> dict:
    """Architecture keywords of :class:`vggfeat.VGG` that fit a Caffe file (as ``infer_arch`` does
    for state dicts): config, width (conv1_1 outputs / 64), fc_dim, num_classes, batch_norm."""
    convs, fcs = _split(layers, "file")
    config = infer_caffe_config(layers)
    width = infer_width(config, [b[0].shape[0] for _, b in convs])
    return dict(
        config=config,
        width=width if width is not None else convs[0][1][0].shape[0] / 64,
        fc_dim=int(np.prod(fcs[0][1][1].shape)),
        num_classes=int(np.prod(fcs[2][1][1].shape)),
        batch_norm=False,
    )


def _fit(blob: np.ndarray, shape: torch.Size, is_fc: bool) -> np.ndarray | None:
    """The blob in the model's shape, or None. Biases and fc weights drop legacy leading 1s
    ((1, 1, 1, n) -> (n,), (1, 1, out, in) -> (out, in)); conv weights must match exactly."""
    if tuple(blob.shape) == tuple(shape):
        return blob
    lead = blob.ndim - len(shape)
    if (len(shape) == 1 or is_fc) and lead > 0 and all(d == 1 for d in blob.shape[:lead]):
        if tuple(blob.shape[lead:]) == tuple(shape):
            return blob.reshape(shape)
    return None


def caffe_to_state_dict(layers, model: nn.Module, source) -> dict[str, torch.Tensor]:
    """Map :func:`read_caffemodel` output onto ``model``: the conv layers in file order onto the
    ``nn.Conv2d`` modules of ``model.features`` and fc6/fc7/fc8 onto ``classifier.0/3/6``.

    Returns a state dict that ``model.load_state_dict(..., strict=True)`` accepts; raises
    :class:`vggfeat.WeightsError` naming ``source``, the layer and both shapes on any mismatch.
    """
    if getattr(model, "arch", {}).get("batch_norm"):
        raise WeightsError(
            f"Caffe weights {source} have no batch norm (the release predates it); build the "
            "model with batch_norm=False"
        )
    convs, fcs = _split(layers, source)
    targets = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    config = getattr(model, "config", "?")
    if len(convs) != len(targets):
        found = CONV_COUNTS.get(len(convs))
        hint = f"it is VGG-{found}; use vgg({found!r}, ...)" if found else "it is not VGG-D or VGG-E"
        raise WeightsError(
            f"Caffe weights {source}: this file has {len(convs)} conv layers but VGG-{config} has "
            f"{len(targets)}: {hint}"
        )
    own = model.state_dict()
    sd: dict[str, torch.Tensor] = {}
    pairs = list(zip(targets, convs)) + [(f"classifier.{i}", fc) for i, fc in zip((0, 3, 6), fcs)]
    for key, (name, blobs) in pairs:
        for suffix, blob in zip(("weight", "bias"), blobs):
            want = own[f"{key}.{suffix}"].shape
            fitted = _fit(blob, want, key.startswith("classifier"))
            if fitted is None:
                raise WeightsError(
                    f"Caffe weights {source}: layer {name} {suffix} has shape {tuple(blob.shape)} "
                    f"but {key}.{suffix} of the model expects {tuple(want)}; {_suggest(layers)}"
                )
            sd[f"{key}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(fitted, dtype=np.float32))
    return sd


def _suggest(layers) -> str:
    try:
        a = infer_caffe_arch(layers)
    except Exception:  # the file is unusual beyond the shape; the shape message stands alone
        return "check config, width, fc_dim and num_classes"
    return (
        f"the file fits vgg({a['config']!r}, width={a['width']:g}, fc_dim={a['fc_dim']}, "
        f"num_classes={a['num_classes']})"
    )


def load_caffemodel(path) -> tuple[dict[str, torch.Tensor], dict]:
    """A ``.caffemodel`` -> (torchvision-layout state dict, architecture keywords of
    :class:`vggfeat.VGG`): the one form :mod:`vggfeat.weights` takes from every source."""
    layers = read_caffemodel(path)
    try:
        arch = {**infer_caffe_arch(layers), "crop": PAPER_CROP}  # the release's 224 crop (7x7 fc6)
        with torch.device("meta"):  # shapes only
            shapes = VGG(**arch)
    except WeightsError as e:  # the layers' own message, with the file it is about
        raise WeightsError(f"Caffe weights file {path}: {e}") from None
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as e:
        raise WeightsError(
            f"Caffe weights file {path} holds no VGG of Table 1 ({type(e).__name__}: {e}); the file "
            "may be damaged: download it again"
        ) from None
    return caffe_to_state_dict(layers, shapes, source=path), arch
