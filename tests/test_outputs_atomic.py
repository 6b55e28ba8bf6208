"""Outputs are replaced atomically and checked before any work: kills at several points of a
replace, a full disk, a read-only folder, an output that is an input, names parquet cannot hold,
the path printed is the path written, and ``--list`` lines read literally."""

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_cli
from conftest import REPO, vggfeat_command

from vggfeat.cli.extract import sidecar, write_features

KILL = str(Path(__file__).parent / "_kill_write.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TINY = ["--weights", "none", "--width", "0.0625", "--fc-dim", "32", "--scales", "224", "--quiet"]
folder = test_cli.folder  # the fixture: three small images


def old_output(out: Path, fmt: str = "npy") -> None:
    write_features(out, fmt, {"fc7": np.ones((3, 50000), np.float32)}, ["old-0", "old-1", "old-2"], {})


def state(out: Path) -> str:
    """ "old" or "new" (the .npy and its sidecar agree, the sidecar's SHA-256 matches), or "no
    sidecar" (a kill between the renames of the commit: the rows have no names, which no
    reader accepts); anything else (a truncated file, new rows with old names) fails."""
    X = np.load(out)  # raises on a truncated file
    side = sidecar(out)
    if not side.exists():
        assert X.shape in ((3, 50000), (7, 50000))
        return "no sidecar"
    meta = json.loads(side.read_text())
    assert len(meta["rows"]) == len(X), "rows paired with another run's names"
    kind = {1.0: "old", 2.0: "new"}[float(X[0, 0])]
    assert all(r.startswith(kind) for r in meta["rows"])
    if "sha256" in meta:
        import hashlib

        assert meta["sha256"][out.name] == hashlib.sha256(out.read_bytes()).hexdigest()
    return kind


@pytest.mark.parametrize(
    "point, want",
    [("write", "old"), ("rename-0", "no sidecar"), ("rename-1", "no sidecar"), ("never", "new")],
)
@pytest.mark.slow
def test_a_kill_while_replacing_a_npy_leaves_the_old_pair_or_the_new_one(tmp_path, point, want):
    out = tmp_path / "feats.npy"
    old_output(out)
    r = subprocess.run([sys.executable, KILL, str(out), "npy", point], env=ENV, capture_output=True)
    assert r.returncode == (0 if point == "never" else -9), r.stderr
    assert state(out) == want  # before: a truncated feats.npy, or new rows under the old names
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert point in ("write", "rename-0", "rename-1") or not leftovers
    old_output(out)  # a later write succeeds and removes the dead writer's leftovers
    assert state(out) == "old" and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_kill_while_replacing_a_parquet_file_leaves_the_old_one(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "feats.parquet"
    old_output(out, "parquet")
    r = subprocess.run([sys.executable, KILL, str(out), "parquet", "rename-0"], env=ENV, capture_output=True)
    assert r.returncode == -9
    assert pq.read_table(out).column("id").to_pylist() == ["old-0", "old-1", "old-2"]


def _fsize_limit(n):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_disk_full_while_replacing_keeps_the_previous_output_and_is_one_line(tmp_path, fmt):
    out = tmp_path / f"feats.{fmt}"
    old_output(out, fmt)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code = (
        "import numpy as np\nfrom vggfeat.cli.common import run_script\n"
        "from vggfeat.cli.extract import write_features\n"
        f"run_script(write_features, {str(out)!r}, {fmt!r}, "
        "{'fc7': np.random.default_rng(0).random((7, 50000), np.float32)}, [str(i) for i in range(7)], {})\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, preexec_fn=_fsize_limit(100000)
    )
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and str(tmp_path) in line and "bytes needed" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # intact, no leftover


@pytest.mark.slow
def test_the_path_printed_is_the_path_written(folder, tmp_path):
    r = vggfeat_command("extract", folder, "--format", "npy", "--out", "noext", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote noext.npy, noext.npy.json:")  # before: "wrote noext"
    assert np.load(tmp_path / "noext.npy").shape == (3, 32)
    r = vggfeat_command("extract", folder, "--format", "npy", "--out", "out/f.parquet", *TINY, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("wrote out/f.parquet.npy, out/f.parquet.npy.json:")
    assert (tmp_path / "out" / "f.parquet.npy").is_file() and not (tmp_path / "out" / "f.parquet").exists()


@pytest.mark.slow
def test_an_output_that_is_an_input_or_inside_an_input_dataset_is_refused_first(folder, tmp_path):
    img = folder / "0.png"
    png = img.read_bytes()
    r = vggfeat_command("extract", folder, "--format", "parquet", "--out", img, *TINY)
    assert r.returncode == 2 and "is one of the input images" in r.stderr, r.stderr
    assert img.read_bytes() == png  # before: the PNG became a parquet file
    r = vggfeat_command("extract", folder, "--format", "hf", "--out", folder, *TINY)
    assert r.returncode == 2 and "is an input" in r.stderr
    r = vggfeat_command("extract", img, "--out", folder.parent / "feats.npy", "--format", "npy", *TINY)
    assert r.returncode == 0, r.stderr  # beside the input: fine
    import datasets
    from PIL import Image

    ds = datasets.Dataset.from_dict({"image": [Image.open(img)]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hfds"))
    files = sorted(p.name for p in (tmp_path / "hfds").iterdir())
    for out in (tmp_path / "hfds", tmp_path / "hfds" / "feats.npy"):
        r = vggfeat_command("extract", tmp_path / "hfds", "--format", "hf", "--out", out, *TINY)
        assert r.returncode == 2 and "input dataset" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "hfds").iterdir()) == files


@pytest.mark.slow
def test_output_problems_are_found_before_any_computing(folder, tmp_path, monkeypatch):
    (tmp_path / "adir.npy").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    cases = [
        (["--out", tmp_path / "adir.npy"], "is a folder"),
        (["--out", tmp_path / "afile", "--format", "hf"], "is a file, not a folder"),
        (["--out", tmp_path / "afile" / "f.npy"], "is a file, not a folder"),
        (["--out", tmp_path / "stuff", "--format", "hf"], "holds other files, not a saved dataset"),
    ]
    for extra, msg in cases:
        r = vggfeat_command("extract", folder, *TINY, *extra)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) <= 3, r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_name_parquet_cannot_hold_is_refused_before_computing(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(REPO / "tests" / "_caffe_writer.py", d / "not-an-image.txt")  # not listed
    name = os.fsdecode(b"caf\xe9.png")
    test_cli.random_image(40, 40).save(d / name)
    r = vggfeat_command("extract", d, "--out", tmp_path / "f.parquet", *TINY)
    assert r.returncode == 2 and "not valid UTF-8" in r.stderr and "caf" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = vggfeat_command("extract", d, "--out", tmp_path / "f.npy", *TINY)  # its sidecar keeps any name
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "f.npy.json").read_text())["rows"] == [str(d / name)]


@pytest.mark.slow
def test_list_lines_are_read_literally(folder, tmp_path):
    for odd in ("#4.png", " lead.png"):
        shutil.copy(folder / "0.png", folder / odd)
    latin = os.fsdecode(b"\xe9t\xe9.png")
    shutil.copy(folder / "1.png", folder / latin)
    lst = tmp_path / "files.txt"
    lst.write_bytes(b"#4.png\n lead.png\n\n\xe9t\xe9.png\n")  # Latin-1, as a file name is bytes
    lst.rename(folder / "files.txt")
    r = vggfeat_command("extract", "--list", folder / "files.txt", "--out", tmp_path / "f.npy", *TINY)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "f.npy.json").read_text())["rows"]
    assert rows == [str(folder / "#4.png"), str(folder / " lead.png"), str(folder / latin)]
    (folder / "files.txt").write_text("0.png\n 0.png\n")
    r = vggfeat_command("extract", "--list", folder / "files.txt", "--out", tmp_path / "g.npy", *TINY)
    assert r.returncode == 2 and "line 2: ' 0.png' is no file" in r.stderr, r.stderr


def _readonly_run(src: Path, dst: Path, *args):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a read-only bind mount")
    dst.mkdir()
    cmd = " ".join(f"'{a}'" for a in [sys.executable, "-m", "vggfeat.cli", *map(str, args)])
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {src} {dst} && exec {cmd}"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if "mount:" in r.stderr:
        pytest.skip(f"read-only bind mounts are not allowed here: {r.stderr.strip()}")
    return r


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line_before_computing(folder, tmp_path):
    (tmp_path / "rw").mkdir()
    r = _readonly_run(
        tmp_path / "rw", tmp_path / "ro", "extract", folder, "--out", tmp_path / "ro" / "f.npy", *TINY
    )
    assert r.returncode == 2 and "cannot write here (Read-only file system)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "RANDOM WEIGHTS" not in r.stderr  # before the nets are built


@pytest.mark.slow
def test_extract_with_a_read_only_cache_serves_and_computes_without_storing(folder, tmp_path):
    cache = tmp_path / "cache"
    r = vggfeat_command("extract", folder / "0.png", "--cache", cache, "--out", tmp_path / "a.npy", *TINY)
    assert r.returncode == 0, r.stderr
    chunks = sorted(cache.rglob("*.npz"))
    r = _readonly_run(
        cache,
        tmp_path / "ro",
        "extract",
        folder,
        "--cache",
        tmp_path / "ro",
        "--out",
        tmp_path / "b.npy",
        *TINY,
    )
    assert r.returncode == 0, r.stderr  # before: EROFS from writing(), no output
    assert r.stderr.count("is read-only") == 1
    ref = vggfeat_command("extract", folder, "--out", tmp_path / "c.npy", *TINY)
    assert ref.returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "c.npy"), atol=1e-6)
    assert sorted(cache.rglob("*.npz")) == chunks
