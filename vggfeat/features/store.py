"""A feature store keyed per image: each descriptor is computed once and served to every later
call that asks for that image under the same protocol, whatever list it comes in.

Layout of a ``cache=`` folder: one store per layer, so that a run of several layers and a run
of one of them share rows, and under each layer one store per protocol, named by the protocol's
digest (as the Hugging Face datasets cache names a dataset by its fingerprint), so that one
folder serves runs of several weights, scales or options and never mixes their rows
(:func:`layer_store`)::

    <layer>/<protocol>/manifest.json    the protocol every row depends on (weights fingerprints,
                                        scales, layer, flip, aggregate, normalize, precision, and
                                        the torch, torchvision and Pillow versions whose resize
                                        and decoding made them) and each net's row width;
                                        written once, never changed
    <layer>/<protocol>/chunks/<writer>-<seq>.npz
                                        immutable chunks: ``keys`` (k,) and ``rows`` (k, D) of one
                                        net (``part``), stamped with the manifest's digest
    <layer>/<protocol>/writers/<writer>.json
                                        one per process writing now (host, pid), removed when it
                                        is done: :func:`compact` refuses to run beside a writer

**Keys** name an image's content, not its place in a list (:mod:`vggfeat.data.identity`), so a
row serves the image in any list it comes in.

**Why it is safe without locks**, on a local disk or a shared network file system where file
locks and SQLite's locking are unreliable: no file is ever written in place. Every process
(an accelerate rank, another job) writes its own chunk files under its own name (host, pid and
a random id), each to a temporary name, flushed and fsync'ed, then renamed, and rename is atomic
on POSIX and on NFS. A reader lists the complete chunks and merges them; a chunk is visible only
once whole, so a kill at any moment loses only the rows not yet flushed, and a damaged file
(zip CRC, shape, or another protocol's stamp) is skipped with one warning naming it and its rows
recomputed, never served. Two writers of the same image write the same row twice; readers take
the first chunk in name order. The manifest is created with an exclusive link, so two first runs
cannot both claim it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from ..data.identity import KEY, digest, image_keys
from ..files import DISK_FULL, NOT_WRITABLE, disk_full, pid_alive

__all__ = ["FeatureStore", "count_rows", "image_keys", "layer_store", "stores"]

log = logging.getLogger("vggfeat")
VERSION = 3
STALE_TMP_S = 24 * 3600  # temporary files older than this were left by killed writers


def _read_manifest(path: Path) -> dict:
    """A store's manifest; an empty or damaged one is a one-line error naming it."""
    try:
        m = json.loads(path.read_text())
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
        return m
    except ValueError as e:
        raise ValueError(
            f"{path} is damaged ({e}); the store's rows cannot be trusted: delete {path.parent} "
            "(or use another cache folder)"
        ) from None


def _dead_writer(tmp_name: str) -> bool:
    """Whether the temporary chunk ``.<host>-<pid>-<id>-<seq>-p<part>.npz.tmp`` was left by a
    process of this host that is gone."""
    parts = tmp_name[1:].rsplit("-", 4)
    if len(parts) != 5 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    return int(parts[1]) != os.getpid() and not pid_alive(int(parts[1]))


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
        self.read_only = False  # set when the store cannot be written: rows computed are held here
        self._held: dict[int, dict[bytes, np.ndarray]] = {}
        if protocol is None:
            self.manifest = _read_manifest(self.root / "manifest.json")
        else:
            want = json.loads(json.dumps({"version": VERSION, "dims": list(dims), **protocol}))
            self.manifest = self._claim(want)
        self.dims = self.manifest["dims"]
        self.digest = digest(json.dumps(self.manifest, sort_keys=True))
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.seq = 0
        self.seen: dict[str, tuple[int, np.ndarray] | None] = {}  # chunk -> (part, keys), immutable
        self.damaged: list[str] = []  # chunks found damaged on reading their rows

    @contextlib.contextmanager
    def writing(self):
        """Announce this process as a writer of the store while the block runs (:func:`compact`
        refuses to run beside one); a killed writer leaves its file, judged by its pid. A store
        that cannot be written (a read-only mount or folder) serves the rows it holds and keeps
        the rows computed now in memory, for this process only (:meth:`_go_read_only`)."""
        mine = self.root / "writers" / f"{self.writer}.json"
        registered = False
        if not self.read_only:
            try:
                mine.parent.mkdir(exist_ok=True)
                mine.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
                registered = True
            except OSError as e:
                if e.errno not in NOT_WRITABLE:
                    raise
                self._go_read_only(e)
        try:
            yield self
        finally:
            if registered:
                mine.unlink(missing_ok=True)

    def _go_read_only(self, e: OSError) -> None:
        if not self.read_only:
            log.warning(
                "feature store %s is read-only (%s): serving the rows it holds, computing the rest "
                "without storing them",
                self.root,
                os.strerror(e.errno),
            )
        self.read_only = True

    def _claim(self, want: dict) -> dict:
        """Create the manifest (exclusively) or check that the existing one matches ``want``; a
        store that does not exist and cannot be made holds ``want`` in memory only (read-only)."""
        path = self.root / "manifest.json"
        try:
            self.chunks.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno not in NOT_WRITABLE:
                raise
            if not path.exists():
                self._go_read_only(e)
                return want
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
        old = _read_manifest(path)
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
        if self.read_only:
            self._hold(part, keys, rows)
            return
        name = f"{self.writer}-{self.seq:06d}-p{part}.npz"
        self.seq += 1
        tmp = self.chunks / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.asarray(keys, KEY), rows=rows, part=part, protocol=np.bytes_(self.digest))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.chunks / name)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if e.errno in DISK_FULL:
                raise disk_full(self.chunks, rows.nbytes + 32 * len(keys) + 1024) from None
            if e.errno not in NOT_WRITABLE:
                raise
            self._go_read_only(e)
            self._hold(part, keys, rows)

    def _hold(self, part: int, keys, rows: np.ndarray) -> None:
        held = self._held.setdefault(part, {})
        for k, r in zip(np.asarray(keys, KEY), rows):
            held.setdefault(bytes(k), r)

    # ---- reading -------------------------------------------------------------------------------
    def scan(self) -> None:
        """Read the keys of chunks not seen yet; skip (once, with a warning) damaged ones."""
        now = time.time()
        if not self.chunks.is_dir():  # a read-only store that was never made
            return
        for entry in os.scandir(self.chunks):
            name = entry.name
            if name.startswith("."):  # a chunk being written, or left by a killed writer
                try:
                    if name.endswith(".tmp") and (
                        _dead_writer(name) or now - entry.stat().st_mtime > STALE_TMP_S
                    ):
                        os.unlink(entry.path)
                except OSError:  # renamed (completed) or removed meanwhile, or read-only
                    pass
                continue
            if not name.endswith(".npz") or name in self.seen:
                continue
            try:
                with np.load(entry.path) as z:
                    ok = bytes(z["protocol"]).decode() == self.digest and int(z["part"]) < len(self.dims)
                    self.seen[name] = (int(z["part"]), z["keys"]) if ok else None
            except FileNotFoundError:  # merged away by compact() meanwhile
                continue
            except Exception as e:
                log.warning("feature store %s: skipping unreadable chunk %s (%s)", self.root, name, e)
                self.seen[name] = None

    def index(self, part: int):
        """(sorted unique keys, chunk name of each, row in that chunk) for one part."""
        self.scan()
        names, keys, rows = [], [], []
        for name in sorted(self.seen):
            entry = self.seen[name]
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
        stored, chunk, row, names = self.index(part)
        q = np.asarray(keys, KEY)
        if not len(stored):
            return np.zeros(len(q), bool), np.zeros(len(q), np.int64), np.zeros(len(q), np.int64), names
        pos = np.minimum(np.searchsorted(stored, q), len(stored) - 1)
        return stored[pos] == q, chunk[pos], row[pos], names

    def missing(self, keys, part: int) -> list[int]:
        """Indices of the first occurrence of every key whose row of ``part`` is not stored."""
        found = self._locate(keys, part)[0]
        held = self._held.get(part)
        if held:
            found |= np.array([bytes(k) in held for k in np.asarray(keys, KEY)], bool)
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
        deadline, damaged = time.monotonic() + wait_s, len(self.damaged)
        found = self._read(keys, part, out, columns, scale)
        while expected is not None and not found[expected].all():
            if len(self.damaged) > damaged:  # rows lost with a damaged chunk: the caller recomputes
                return found
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
        while True:  # again after a chunk proves damaged or merged away: its keys may be elsewhere
            found, chunk, row, names = self._locate(keys, part)
            idx = np.flatnonzero(found)
            order = idx[np.argsort(chunk[idx], kind="stable")]
            groups = np.split(order, np.flatnonzero(np.diff(chunk[order])) + 1) if len(order) else []
            if all(self.copy_rows(names[chunk[g[0]]], part, row[g], out, g, columns, scale) for g in groups):
                held = self._held.get(part)
                for i in np.flatnonzero(~found) if held else ():
                    r = held.get(bytes(np.asarray(keys[i], KEY)))
                    if r is not None:
                        out[i, columns] = r * scale
                        found[i] = True
                return found

    def copy_rows(self, name: str, part: int, rows, out, at, columns, scale) -> bool:
        """``out[at, columns] = rows`` of chunk ``name``; False (the chunk forgotten) if it is
        gone or damaged, with one warning for a damaged one."""
        try:
            with np.load(self.chunks / name) as z:
                stored = z["rows"]
            if stored.shape != (len(self.seen[name][1]), self.dims[part]):
                raise ValueError(f"rows of shape {stored.shape}")
        except FileNotFoundError:  # merged by compact(): the merged chunk holds the rows
            del self.seen[name]
            return False
        except Exception as e:
            log.warning(
                "feature store %s: skipping damaged chunk %s (%s: %s); its rows are recomputed",
                self.root,
                name,
                type(e).__name__,
                e,
            )
            self.seen[name] = None
            self.damaged.append(name)
            return False
        out[at, columns] = stored[rows] * scale
        return True


def layer_store(root, layer: str, protocol: dict, dims: list[int]) -> FeatureStore:
    """The store of ``layer`` and ``protocol`` in the ``cache=`` folder ``root``: a folder per
    protocol digest under the layer's folder (module docstring)."""
    root = Path(root)
    for old, layout in ((root, "one layer per folder"), (root / layer, "one store per layer")):
        if (old / "manifest.json").exists():  # a store of an earlier layout
            v = _read_manifest(old / "manifest.json").get("version")
            raise ValueError(
                f"{old} holds features in an earlier layout (format {v}: "
                f"{'the whole-list cache' if v == 1 else layout}, whose image keys this version no "
                "longer matches); a cache folder now holds one store per layer and protocol. "
                f"Delete {old} or use another cache folder."
            )
    manifest = json.dumps({"version": VERSION, "dims": list(dims), **protocol}, sort_keys=True)
    return FeatureStore(root / layer / digest(manifest)[:16], protocol, dims)


def stores(path) -> list[FeatureStore]:
    """Every store under ``path`` (a ``cache=`` folder, a layer's folder, or one store)."""
    found = sorted({m.parent for m in Path(path).rglob("manifest.json") if (m.parent / "chunks").is_dir()})
    return [FeatureStore(p) for p in found]


def count_rows(path, layer: str = "fc7") -> int:
    """Images with a complete row (every fused net) of ``layer`` in the ``cache=`` folder
    ``path``, summed over its protocols' stores; 0 if none yet."""
    total = 0
    for store in stores(Path(path) / layer) if (Path(path) / layer).is_dir() else []:
        common = None
        for part in range(len(store.dims)):
            keys = store.index(part)[0]
            common = keys if common is None else np.intersect1d(common, keys)
        total += 0 if common is None else len(common)
    return total
