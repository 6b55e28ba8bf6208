"""Image identity: the key under which the feature store (:mod:`vggfeat.features.store`) keeps an
image's row. Keys name an image's content, not its place in a list:

- a file: its resolved path, size, modification time (ns), inode and status-change time (ns).
  Not a content hash: hashing would read every file in full just to learn that it is cached
  (on ImageNet over a network file system that is the cost of the run). Size and mtime change
  whenever a file is rewritten, as ``make`` and ``rsync`` rely on; a copy that keeps size and
  mtime over the old file (``cp -p``, ``rsync -a``, ``shutil.copy2``, ``tar``/``unzip``,
  ``touch -r``) gets a new inode or ctime, which no user call can set back. A file copied
  elsewhere is recomputed, never mistaken. What remains uncaught: a rewrite in place that keeps
  the size, within one tick of both the mtime and the ctime clock (file systems with coarse
  timestamps, e.g. FAT's 2 s or ext3's 1 s), and a file system that reports no stable inode or
  ctime (some FUSE and SMB mounts).
- an in-memory image: a hash of its pixels with shape and dtype (arrays, tensors), or of the
  RGB image it decodes to (PIL, so mode, palette and EXIF orientation count).
- a Hugging Face row: a hash of the encoded image bytes (or the file key when the row stores a
  path). It survives ``select``, ``shuffle`` and ``filter``, which a fingerprint + row index
  does not, and needs no private attribute. A dataset with a transform (``with_transform``,
  ``set_transform``, ``set_format``) is keyed by what the transform gives, as that is what the
  net sees: each image is then decoded to be keyed.
- a torch Dataset: only items that are file paths carry an identity; otherwise pass ``keys=``.
- ``keys=``: one id per image from the caller, hashed in its own namespace.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image

from .decode import ImageSource, load_image

KEY = "S32"  # 32 hex digits: 128-bit blake2b digests


def digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, (bytes, memoryview)) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_key(path) -> str:
    """(resolved path, size, mtime, inode, ctime) of an image file; see the module docstring."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:  # unreadable: a key that never matches, the engine reports the file
        return uuid.uuid4().hex
    return digest("file", real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def library_versions() -> dict:
    """The versions of the code that decodes and resizes images: a new resize kernel or decoder
    gives other rows, so they are part of every store's protocol."""
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__}


def item_key(item) -> str:
    """The key of one input of any kind :func:`vggfeat.data.decode.load_image` accepts."""
    if isinstance(item, (str, os.PathLike)):
        return file_key(item)
    if isinstance(item, dict) and (item.get("bytes") or item.get("path")):  # HF Image(decode=False)
        return digest("bytes", item["bytes"]) if item.get("bytes") else file_key(item["path"])
    if isinstance(item, np.ndarray):
        return digest("array", item.shape, item.dtype.str, np.ascontiguousarray(item).data)
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu().contiguous()
        return digest("tensor", tuple(t.shape), t.dtype, t.reshape(-1).view(torch.uint8).numpy().data)
    if isinstance(item, Image.Image):
        try:
            rgb = load_image(item)
        except Exception:  # undecodable: never matches, the engine reports it
            return uuid.uuid4().hex
        return digest("pil", rgb.size, rgb.tobytes())
    return uuid.uuid4().hex  # unsupported input: the engine reports it


def image_keys(source: ImageSource, keys=None, lo: int = 0, hi: int | None = None) -> list[str]:
    """Keys of ``source[lo:hi]``: from the caller's ``keys`` (one id per image) or from each
    image's identity (module docstring). A torch Dataset whose items are not paths needs keys."""
    hi = len(source) if hi is None else hi
    if keys is not None:
        if len(keys) != len(source):
            raise ValueError(f"keys= has {len(keys)} entries for {len(source)} images; pass one per image")
        return [digest("key", keys[i]) for i in range(lo, hi)]
    if source.kind == "hf":
        return _hf_keys(source, lo, hi)
    if source.kind == "torch" and len(source) and not _has_path(source[0]):
        raise ValueError(
            f"cache= needs an identity for every image, and the items of this torch Dataset are "
            f"{type(source[0]).__name__}s, not file paths. Pass keys= (one stable id per item, "
            "e.g. its file path), pass the list of image paths instead of the Dataset, or cache=None."
        )
    return [item_key(source[i]) for i in range(lo, hi)]


def _has_path(item) -> bool:
    return isinstance(item, (str, os.PathLike)) or (isinstance(item, dict) and bool(item.get("path")))


def _hf_keys(source: ImageSource, lo: int, hi: int) -> list[str]:
    import datasets  # deferred: datasets costs seconds to import

    ds, col = source.items, source.column
    # a transform (with_transform, set_transform, set_format) changes what the net sees: key that
    if ds.format.get("type") is not None or not isinstance(ds.features[col], datasets.Image):
        return [item_key(source[i]) for i in range(lo, hi)]
    # the encoded bytes, read without decoding a pixel
    raw = ds.select(range(lo, hi)).select_columns([col]).cast_column(col, datasets.Image(decode=False))
    return [item_key(item) for batch in raw.iter(batch_size=256) for item in batch[col]]
