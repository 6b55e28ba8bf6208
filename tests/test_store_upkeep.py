"""The feature store's maintenance against itself and against its file system: two compacts
and a writer at once, a read-only mount, unreadable chunks, leftovers of dead writers."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vggfeat.errors import StoreBusy
from vggfeat.features.store import FeatureStore, count_rows
from vggfeat.features.upkeep import compact

OPS = str(Path(__file__).parent / "_store_ops.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def op(*args, wait=True, **env):
    p = subprocess.Popen(
        [sys.executable, OPS, *map(str, args)],
        env={**ENV, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait:
        return p
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err


def fill(store: FeatureStore, first: int, chunks: int) -> None:
    for c in range(first, first + chunks):
        store.write(0, ["%032x" % (c * 10 + i) for i in range(10)], np.full((10, 32), c, np.float32))


@pytest.mark.slow
def test_two_compacts_and_a_writer_at_once_lose_no_row(tmp_path):
    """The interleaving that lost rows: compact A has written its merged chunk and is about to
    remove the old ones when compact B scans (and counts A's merged chunk among the old); then
    A removes the chunks B is reading. Meanwhile a writer adds rows. Three rounds."""
    for it in range(3):
        root, sync = tmp_path / f"c{it}", tmp_path / f"sync{it}"
        sync.mkdir()
        fill(FeatureStore(root / "fc7" / "x", {"p": 1}, [32]), 0, 60)
        a = op("compact", root, wait=False, HOLD=str(sync))
        deadline = time.time() + 120
        while not (sync / "held").exists() and a.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (sync / "held").exists(), a.communicate()
        b = op("compact", root, wait=False, RELEASE=str(sync))
        while not (sync / "go").exists() and b.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        (sync / "go").touch()  # B refused (it never read a chunk): let A go on
        w = op("fill", root, 1000 + 10 * it, 10, wait=False, DELAY="0.05")
        (ra, _, ea), (rb, _, eb), (rw, _, ew) = [(p.wait(300), *p.communicate()) for p in (a, b, w)]
        assert ra == 0 and rw == 0, (ea, ew)
        assert count_rows(root) == 600 + 100  # before: 270 to 600 rows were lost
        assert rb == 2 and "is being compacted by" in eb and len(eb.strip().splitlines()) == 1, eb
        assert not (root / "fc7" / "x" / "writers" / "compact.json").exists()


def test_a_second_compact_is_refused_while_one_runs_and_after_a_killed_one_it_takes_over(tmp_path):
    root = tmp_path / "c"
    store = FeatureStore(root / "fc7" / "x", {"p": 1}, [32])
    fill(store, 0, 3)
    mark = store.root / "writers" / "compact.json"
    mark.parent.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mark.write_text(f'{{"host": "{os.uname().nodename}", "pid": {sleeper.pid}, "compact": true}}')
        with pytest.raises(StoreBusy, match=f"being compacted by host .*pid {sleeper.pid}"):
            compact(root)
        assert len(list(store.chunks.glob("*.npz"))) == 3  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    ((root_, before, after),) = compact(root)  # the holder is dead: taken over
    assert (before, after) == (3, 1) and count_rows(root) == 30 and not mark.exists()


def test_compact_refuses_beside_a_writer(tmp_path):
    store = FeatureStore(tmp_path / "c" / "fc7" / "x", {"p": 1}, [32])
    fill(store, 0, 2)
    with store.writing():
        with pytest.raises(StoreBusy, match="being written by writer"):
            compact(tmp_path / "c")
    assert compact(tmp_path / "c")[0][1:] == (2, 1)


def test_compact_quarantines_unreadable_chunks(tmp_path, caplog):
    store = FeatureStore(tmp_path / "c" / "fc7" / "x", {"p": 1}, [32])
    fill(store, 0, 3)
    bad = store.chunks / "zz-damaged-p0.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    compact(tmp_path / "c")
    assert not bad.exists() and (store.root / "quarantine" / bad.name).exists()
    caplog.clear()
    assert count_rows(tmp_path / "c") == 30
    assert "unreadable" not in caplog.text  # before: every later run warned again


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    store = FeatureStore(tmp_path / "c" / "fc7" / "x", {"p": 1}, [32])
    fill(store, 0, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    gone = store.chunks / f".{host}-{dead.pid}-0123abcd-000000-p0.npz.tmp"
    mine = store.chunks / f".{host}-{os.getpid()}-0123abcd-000000-p0.npz.tmp"
    other = store.chunks / f".otherhost-{dead.pid}-0123abcd-000000-p0.npz.tmp"
    for f in (gone, mine, other):
        f.write_bytes(b"x" * 100)
    FeatureStore(store.root).missing([f"{1:032x}"], 0)  # any reader scans
    assert not gone.exists() and mine.exists() and other.exists()  # before: kept for 24 h


def test_an_empty_manifest_is_one_line_naming_it(tmp_path):
    store = FeatureStore(tmp_path / "c" / "fc7" / "x", {"p": 1}, [32])
    (store.root / "manifest.json").write_text("")
    with pytest.raises(ValueError, match=r"manifest.json is damaged .*delete"):
        FeatureStore(store.root)
    with pytest.raises(ValueError, match=r"manifest.json is damaged"):
        FeatureStore(store.root, {"p": 1}, [32])


def test_disk_full_while_storing_is_one_line_and_leaves_no_partial_chunk(tmp_path):
    code = (
        "import resource, numpy as np\n"
        "from vggfeat.features.store import FeatureStore\n"
        f"s = FeatureStore({str(tmp_path / 's')!r}, {{'p': 1}}, [1000])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from vggfeat.cli.common import run_script\n"
        "run_script(lambda: s.write(0, ['%032x' % i for i in range(50)], np.ones((50, 1000))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no space left" in r.stderr, r.stderr
    assert "bytes needed" in r.stderr and str(tmp_path / "s" / "chunks") in r.stderr
    assert not list((tmp_path / "s" / "chunks").iterdir())  # the partial .tmp was removed


def _readonly(src: Path, dst: Path, code: str):
    """Run ``code`` with ``dst`` a read-only bind mount of ``src``, in a mount namespace of its
    own (root bypasses file modes, so a chmod would not stop it)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a read-only bind mount")
    dst.mkdir()
    script = f'mount --bind -o ro {src} {dst} && exec {sys.executable} -c "$0"'
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, code], env=ENV, capture_output=True, text=True)
    if "mount" in r.stderr and ("permission denied" in r.stderr.lower() or "not permitted" in r.stderr):
        pytest.skip(f"read-only bind mounts are not allowed here: {r.stderr.strip()}")
    return r


def test_a_read_only_store_serves_its_rows_and_computes_the_rest_without_storing(tmp_path):
    store = FeatureStore(tmp_path / "c" / "fc7" / "x", {"p": 1}, [32])
    fill(store, 0, 2)
    before = sorted(p.name for p in store.chunks.iterdir())
    code = (
        "import logging, numpy as np\n"
        "logging.basicConfig(format='%(message)s')\n"
        "from vggfeat.features.store import FeatureStore\n"
        f"s = FeatureStore({str(tmp_path / 'ro' / 'fc7' / 'x')!r}, {{'p': 1}}, [32])\n"
        "keys = ['%032x' % i for i in range(30)]\n"
        "with s.writing():\n"
        "    todo = s.missing(keys, 0)\n"
        "    s.write(0, [keys[i] for i in todo], np.full((len(todo), 32), 7, np.float32))\n"
        "    s.write(0, [keys[i] for i in todo], np.full((len(todo), 32), 8, np.float32))\n"
        "    out = np.zeros((30, 32), np.float32)\n"
        "    found = s.read(keys, 0, out, slice(None), expected=np.ones(30, bool), wait_s=0)\n"
        "print(len(todo), found.all(), out[:, 0].tolist())\n"
        "from vggfeat.features.upkeep import compact\n"
        "from vggfeat.cli.command import main\n"
        f"raise SystemExit(main(['store', 'compact', {str(tmp_path / 'ro')!r}]))\n"
    )
    r = _readonly(tmp_path / "c", tmp_path / "ro", code)
    n, ok, col = r.stdout.split(" ", 2)
    assert (n, ok) == ("10", "True"), r.stderr
    assert eval(col) == [0.0] * 10 + [1.0] * 10 + [7.0] * 10  # stored rows, then the computed ones
    lines = r.stderr.strip().splitlines()
    assert sum("is read-only" in x for x in lines) == 1, r.stderr  # one warning
    assert r.returncode == 2 and "cannot be compacted: it is not writable" in lines[-1], r.stderr
    assert sorted(p.name for p in store.chunks.iterdir()) == before  # nothing was written
