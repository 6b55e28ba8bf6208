"""A feature store keyed per image: each descriptor is computed once and served to every later
call that asks for that image under the same protocol, whatever list it comes in.

Layout of a ``cache=`` folder: one store per layer, so that a run of several layers and a run
of one of them share rows (:func:`layer_store`)::

    <layer>/manifest.json               the protocol every row depends on (weights fingerprints,
                                        scales, layer, flip, aggregate, normalize, precision) and
                                        each net's row width; written once, never changed
    <layer>/chunks/<writer>-<seq>.npz   immutable chunks: ``keys`` (k,) and ``rows`` (k, D) of one
                                        net (``part``), stamped with the manifest's digest

**Keys** name an image's content, not its place in a list:

- a file: its resolved path, size and modification time (ns). Not a content hash: hashing
  would read every file in full just to learn that it is cached (on ImageNet over a network
  file system that is the cost of the run), while size and mtime change whenever a file is
  rewritten, as ``make`` and ``rsync`` rely on. A file copied elsewhere is recomputed, never
  mistaken; a rewrite keeping size and a timestamp of the same tick (coarse-clock file systems)
  is the one case it cannot see.
- an in-memory image: a hash of its pixels with shape and dtype (arrays, tensors), or of the
  RGB image it decodes to (PIL, so mode, palette and EXIF orientation count).
- a Hugging Face row: a hash of the encoded image bytes (or the file key when the row stores a
  path). It survives ``select``, ``shuffle`` and ``filter``, which a fingerprint + row index
  does not, and needs no private attribute.
- a torch Dataset: only items that are file paths carry an identity; otherwise pass ``keys=``.
- ``keys=``: one id per image from the caller, hashed in its own namespace.

**Why it is safe without locks**, on a local disk or a shared network file system where file
locks and SQLite's locking are unreliable: no file is ever written in place. Every process
(an accelerate rank, another job) writes its own chunk files under its own name (host, pid and
a random id), each to a temporary name, flushed and fsync'ed, then renamed, and rename is atomic
on POSIX and on NFS. A reader lists the complete chunks and merges them; a chunk is visible only
once whole, so a kill at any moment loses only the rows not yet flushed, and a damaged file
(zip CRC, shape, or another protocol's stamp) is skipped and its rows recomputed, never served.
Two writers of the same image write the same row twice; readers take the first chunk in name
order. The manifest is created with an exclusive link, so two first runs cannot both claim it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import ImageSource, load_image

log = logging.getLogger("vggfeat")
VERSION = 2
KEY = "S32"  # 32 hex digits: 128-bit blake2b digests
STALE_TMP_S = 24 * 3600  # temporary files older than this were left by killed writers


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, (bytes, memoryview)) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_key(path) -> str:
    """(resolved path, size, mtime in ns) of an image file; see the module docstring."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:  # unreadable: a key that never matches, the engine reports the file
        return uuid.uuid4().hex
    return _digest("file", real, st.st_size, st.st_mtime_ns)


def item_key(item) -> str:
    """The key of one input of any kind :func:`vggfeat.data.load_image` accepts."""
    if isinstance(item, (str, os.PathLike)):
        return file_key(item)
    if isinstance(item, dict) and (item.get("bytes") or item.get("path")):  # HF Image(decode=False)
        return _digest("bytes", item["bytes"]) if item.get("bytes") else file_key(item["path"])
    if isinstance(item, np.ndarray):
        return _digest("array", item.shape, item.dtype.str, np.ascontiguousarray(item).data)
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu().contiguous()
        return _digest("tensor", tuple(t.shape), t.dtype, t.reshape(-1).view(torch.uint8).numpy().data)
    if isinstance(item, Image.Image):
        try:
            rgb = load_image(item)
        except Exception:  # undecodable: never matches, the engine reports it
            return uuid.uuid4().hex
        return _digest("pil", rgb.size, rgb.tobytes())
    return uuid.uuid4().hex  # unsupported input: the engine reports it


def image_keys(source: ImageSource, keys=None, lo: int = 0, hi: int | None = None) -> list[str]:
    """Keys of ``source[lo:hi]``: from the caller's ``keys`` (one id per image) or from each
    image's identity (module docstring). A torch Dataset whose items are not paths needs keys."""
    hi = len(source) if hi is None else hi
    if keys is not None:
        if len(keys) != len(source):
            raise ValueError(f"keys= has {len(keys)} entries for {len(source)} images; pass one per image")
        return [_digest("key", keys[i]) for i in range(lo, hi)]
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
    import datasets

    ds, col = source.items, source.column
    if not isinstance(ds.features[col], datasets.Image):
        return [item_key(source[i]) for i in range(lo, hi)]
    # the encoded bytes, read without decoding a pixel
    raw = ds.select(range(lo, hi)).select_columns([col]).cast_column(col, datasets.Image(decode=False))
    return [item_key(item) for batch in raw.iter(batch_size=256) for item in batch[col]]


def _flat(d, prefix="") -> dict:
    """{"models": [{"fingerprint": f}]} -> {"models[0].fingerprint": f}: fields a user can name."""
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}.{k}" if prefix else k).items()}
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        return {k2: v2 for i, x in enumerate(d) for k2, v2 in _flat(x, f"{prefix}[{i}]").items()}
    return {prefix: d}


class FeatureStore:
    """One store folder (see the module docstring). ``protocol`` (a JSON-able dict) and ``dims``
    (row width of each part, i.e. each fused net) describe the rows; a folder made with another
    protocol is refused. Without them, an existing store is opened as it is (for reading)."""

    def __init__(self, root, protocol: dict | None = None, dims: list[int] | None = None):
        self.root = Path(root)
        self.chunks = self.root / "chunks"
        if protocol is None:
            self.manifest = json.loads((self.root / "manifest.json").read_text())
        else:
            want = json.loads(json.dumps({"version": VERSION, "dims": list(dims), **protocol}))
            self.manifest = self._claim(want)
        self.dims = self.manifest["dims"]
        self.digest = _digest(json.dumps(self.manifest, sort_keys=True))
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._seen: dict[str, tuple[int, np.ndarray] | None] = {}  # chunk -> (part, keys), immutable

    def _claim(self, want: dict) -> dict:
        """Create the manifest (exclusively) or check that the existing one matches ``want``."""
        self.chunks.mkdir(parents=True, exist_ok=True)
        path = self.root / "manifest.json"
        if not path.exists():
            tmp = self.root / f".manifest-{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(want, indent=1, sort_keys=True))
            try:
                os.link(tmp, path)  # atomic and exclusive, also on NFS: the first run wins
            except FileExistsError:
                pass
            except OSError:  # no hard links on this mount: a lost race then leaves the other
                if not path.exists():  # run's manifest, and its chunks carry its digest, so rows
                    os.replace(tmp, path)  # of the two protocols are still never mixed
            finally:
                tmp.unlink(missing_ok=True)
        old = json.loads(path.read_text())
        if old.get("version") != VERSION:
            raise ValueError(
                f"{self.root} is not a feature store of this vggfeat (format {old.get('version')}, "
                f"expected {VERSION}; format 1 was the whole-list cache). Delete it or use another folder."
            )
        a, b = _flat(old), _flat(want)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            raise ValueError(
                f"feature store {self.root} holds rows made with other {', '.join(diff)} "
                f"(stored: { {k: a.get(k) for k in diff} }, now: { {k: b.get(k) for k in diff} }); "
                "refusing to mix features. Use another cache folder, or delete this one."
            )
        return old

    # ---- writing -------------------------------------------------------------------------------
    def write(self, part: int, keys, rows: np.ndarray) -> None:
        """Add ``rows`` (k, dims[part]) of images ``keys`` as one new chunk, atomically."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.shape != (len(keys), self.dims[part]):
            raise ValueError(f"rows of shape {rows.shape} for {len(keys)} keys of width {self.dims[part]}")
        name = f"{self.writer}-{self._seq:06d}-p{part}.npz"
        self._seq += 1
        tmp = self.chunks / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.asarray(keys, KEY), rows=rows, part=part, protocol=np.bytes_(self.digest))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.chunks / name)

    # ---- reading -------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Read the keys of chunks not seen yet; skip (once, with a warning) damaged ones."""
        now = time.time()
        for entry in os.scandir(self.chunks):
            name = entry.name
            if name.startswith("."):  # a chunk being written, or left by a killed writer
                try:
                    if name.endswith(".tmp") and now - entry.stat().st_mtime > STALE_TMP_S:
                        os.unlink(entry.path)
                except OSError:  # renamed (completed) or removed meanwhile
                    pass
                continue
            if not name.endswith(".npz") or name in self._seen:
                continue
            try:
                with np.load(entry.path) as z:
                    ok = bytes(z["protocol"]).decode() == self.digest and int(z["part"]) < len(self.dims)
                    self._seen[name] = (int(z["part"]), z["keys"]) if ok else None
            except Exception as e:
                log.warning("feature store %s: skipping unreadable chunk %s (%s)", self.root, name, e)
                self._seen[name] = None

    def _index(self, part: int):
        """(sorted unique keys, chunk name of each, row in that chunk) for one part."""
        self._scan()
        names, keys, rows = [], [], []
        for name in sorted(self._seen):
            entry = self._seen[name]
            if entry is not None and entry[0] == part:
                names.append(name)
                keys.append(entry[1])
                rows.append(np.arange(len(entry[1])))
        if not keys:
            return np.empty(0, KEY), np.empty(0, np.int64), np.empty(0, np.int64), names
        chunk = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
        k, first = np.unique(np.concatenate(keys), return_index=True)  # first chunk in name order
        return k, chunk[first], np.concatenate(rows)[first], names

    def _locate(self, keys, part: int):
        """For each key: (found, chunk name index, row), and the chunk names."""
        stored, chunk, row, names = self._index(part)
        q = np.asarray(keys, KEY)
        if not len(stored):
            return np.zeros(len(q), bool), np.zeros(len(q), np.int64), np.zeros(len(q), np.int64), names
        pos = np.minimum(np.searchsorted(stored, q), len(stored) - 1)
        return stored[pos] == q, chunk[pos], row[pos], names

    def missing(self, keys, part: int) -> list[int]:
        """Indices of the first occurrence of every key whose row of ``part`` is not stored."""
        found = self._locate(keys, part)[0]
        seen, todo = set(), []
        for i in np.flatnonzero(~found):
            if keys[i] not in seen:
                seen.add(keys[i])
                todo.append(int(i))
        return todo

    def read(
        self, keys, part: int, out: np.ndarray, columns: slice, scale: float = 1.0, *, expected=None, wait_s=0
    ) -> np.ndarray:
        """Copy the stored rows of ``part`` into ``out[i, columns]`` (times ``scale``) for every
        key found, one chunk in memory at a time; returns the found mask. Rows ``expected`` (a
        mask) that other processes write are waited for up to ``wait_s`` seconds: a network
        file system may list new files late."""
        deadline = time.monotonic() + wait_s
        found = self._read(keys, part, out, columns, scale)
        while expected is not None and not found[expected].all():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"feature store {self.root}: {int((~found & expected).sum())} rows computed by "
                    f"other processes are not visible after {wait_s} s; is the folder on a file "
                    "system shared by every rank?"
                )
            time.sleep(1)
            found = self._read(keys, part, out, columns, scale)
        return found

    def _read(self, keys, part, out, columns, scale) -> np.ndarray:
        found, chunk, row, names = self._locate(keys, part)
        idx = np.flatnonzero(found)
        order = idx[np.argsort(chunk[idx], kind="stable")]
        groups = np.split(order, np.flatnonzero(np.diff(chunk[order])) + 1) if len(order) else []
        for g in groups:
            with np.load(self.chunks / names[chunk[g[0]]]) as z:
                out[g, columns] = z["rows"][row[g]] * scale
        return found


def layer_store(root, layer: str, protocol: dict, dims: list[int]) -> FeatureStore:
    """The store of ``layer`` in the ``cache=`` folder ``root`` (module docstring)."""
    root = Path(root)
    if (root / "manifest.json").exists():  # a store of the one-layer-per-folder layout
        v = json.loads((root / "manifest.json").read_text()).get("version")
        raise ValueError(
            f"{root} holds features in an earlier layout (format {v}: "
            f"{'the whole-list cache' if v == 1 else 'one layer per folder'}); a cache folder now "
            "holds one store per layer. Delete it or use another folder."
        )
    return FeatureStore(root / layer, protocol, dims)


def count_rows(path, layer: str = "fc7") -> int:
    """Images with a complete row (every fused net) of ``layer`` in the ``cache=`` folder
    ``path``; 0 if none yet."""
    try:
        store = FeatureStore(Path(path) / layer)
    except (OSError, ValueError):  # no manifest yet, or one being written
        return 0
    common = None
    for part in range(len(store.dims)):
        keys = store._index(part)[0]
        common = keys if common is None else np.intersect1d(common, keys)
    return 0 if common is None else len(common)
