"""The feature store keyed per image: reuse across subsets, permutations and supersets, no stale
rows, concurrent writers, kills, protocol checks. Tiny nets (crop 32) on 32-pixel images."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import torchvision
from conftest import vggfeat_command
from PIL import Image

import vggfeat
import vggfeat.features.dense
from vggfeat.errors import StoreBusy
from vggfeat.features.store import count_rows, stores
from vggfeat.features.upkeep import compact

KILL = str(Path(__file__).parent / "_kill_extract.py")


def tiny_net(seed=0):
    torch.manual_seed(seed)  # the same net as tests/_kill_extract.py for seed 0
    return vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10, crop=32).eval()


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32 + i % 3, 32 + i % 5, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture
def pngs(tmp_path):
    out = []
    for i, a in enumerate(pixels(12)):
        p = tmp_path / "imgs" / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(a).save(p)
        out.append(p)
    return out


@pytest.fixture
def computed(monkeypatch):
    """Counts the images the engine decodes and runs (num_workers=0 keeps it in-process)."""
    count = [0]
    real = vggfeat.features.dense.to_tensor
    monkeypatch.setattr(
        vggfeat.features.dense, "to_tensor", lambda img: count.__setitem__(0, count[0] + 1) or real(img)
    )
    return count


KW = dict(scales=(32, 48), num_workers=0, progress=False)


def run(images, cache=None, net=None, **kw):
    return vggfeat.extract(images, model=net or tiny_net(), cache=cache, **{**KW, **kw})


def test_subsets_permutations_and_supersets_compute_only_missing_images(pngs, tmp_path, computed):
    ref = run(pngs)  # no store
    store = tmp_path / "store"
    computed[0] = 0
    np.testing.assert_allclose(run(pngs[:6], store), ref[:6], atol=1e-6)
    assert computed[0] == 6 and count_rows(store) == 6
    perm = [5, 0, 3, 3, 1]  # a permuted subset, with a repeat
    np.testing.assert_allclose(run([pngs[i] for i in perm], store), ref[perm], atol=1e-6)
    assert computed[0] == 6  # nothing new
    order = np.random.default_rng(0).permutation(12)  # a superset (the folder grew), shuffled
    np.testing.assert_allclose(run([pngs[i] for i in order], store), ref[order], atol=1e-6)
    assert computed[0] == 12 and count_rows(store) == 12  # only the 6 new ones
    np.testing.assert_allclose(run(pngs[0].parent, store), ref, atol=1e-6)  # the folder itself
    assert computed[0] == 12


def test_each_layer_has_its_own_store_shared_by_runs_of_one_or_several_layers(pngs, tmp_path, computed):
    store = tmp_path / "store"
    refs = {layer: run(pngs, layer=layer) for layer in ("fc7", "pool5", "fc6")}
    computed[0] = 0
    np.testing.assert_allclose(run(pngs[:6], store), refs["fc7"][:6], atol=1e-6)  # fc7 alone
    assert computed[0] == 6
    X = run(pngs, store, layer=("pool5", "fc7"))  # pool5 for all, fc7 for the other 6: one pass
    assert computed[0] == 6 + 12
    for layer in ("pool5", "fc7"):
        np.testing.assert_allclose(X[layer], refs[layer], atol=1e-6)
        assert count_rows(store, layer) == 12
    fc7_rows = sum(len(np.load(p)["keys"]) for p in (store / "fc7").glob("*/chunks/*.npz"))
    assert fc7_rows == 12  # the 6 stored fc7 rows were not written again
    order = [11, 2, 7, 0]
    np.testing.assert_allclose(
        run([pngs[i] for i in order], store, layer="pool5"), refs["pool5"][order], atol=1e-6
    )
    Y = run(pngs[3:], store, layer=("fc7", "pool5"))
    assert computed[0] == 18  # both layers served from their stores
    np.testing.assert_allclose(Y["fc7"], refs["fc7"][3:], atol=1e-6)
    Z = run(pngs[:2], store, layer=("fc6", "pool5"))  # a new layer: computed (and stored) alone
    assert computed[0] == 20 and count_rows(store, "fc6") == 2 and count_rows(store, "pool5") == 12
    np.testing.assert_allclose(Z["fc6"], refs["fc6"][:2], atol=1e-6)
    computed[0] = 0  # each layer's protocol is still checked: other scales are other rows
    W = run(pngs[:2], store, layer=("fc6", "pool5"), scales=(32,))
    assert computed[0] == 2
    np.testing.assert_allclose(W["pool5"], run(pngs[:2], layer="pool5", scales=(32,)), atol=1e-6)


def test_other_images_of_the_same_length_are_not_served_stale_rows(tmp_path, computed):
    import datasets

    a, b = pixels(4, seed=1), pixels(4, seed=2)
    store = tmp_path / "store"
    run(a, store)
    computed[0] = 0
    np.testing.assert_allclose(run(b, store), run(b), atol=1e-6)
    assert computed[0] == 4 + 4  # b with the store, then b without

    def hf(arrays):
        ds = datasets.Dataset.from_dict({"image": [Image.fromarray(x) for x in arrays]})
        return ds.cast_column("image", datasets.Image())

    c, d = hf(pixels(4, seed=3)), hf(pixels(4, seed=4))
    Xc = run(c, store)
    computed[0] = 0
    np.testing.assert_allclose(run(d, store), run(pixels(4, seed=4)), atol=1e-6)
    assert computed[0] == 4 + 4
    # a row's identity survives shuffle and select: served without computing
    part = c.shuffle(seed=0).select([0, 2])
    computed[0] = 0
    X = run(part, store)
    assert computed[0] == 0
    np.testing.assert_allclose(X, run([np.asarray(im) for im in part["image"]]), atol=1e-6)
    assert not np.allclose(X, Xc[[0, 2]], atol=1e-3)  # the shuffle did move rows


def test_file_rewritten_in_place_is_recomputed(tmp_path, computed):
    path = tmp_path / "x.bmp"  # uncompressed: the rewrite has exactly the same size
    old, new = pixels(2, seed=5)[0], pixels(2, seed=6)[0]
    Image.fromarray(old).save(path)
    store = tmp_path / "store"
    run([path], store)
    size = path.stat().st_size
    time.sleep(0.05)  # the next timestamp tick
    Image.fromarray(new).save(path)
    assert path.stat().st_size == size
    computed[0] = 0
    np.testing.assert_allclose(run([path], store), run([new]), atol=1e-6)
    assert computed[0] == 2


def test_result_is_an_ordinary_array_that_cannot_touch_the_store(tmp_path):
    images, store = pixels(3), tmp_path / "store"
    X = run(images, store)
    assert type(X) is np.ndarray and X.flags.writeable and X.flags.owndata
    want = X.copy()
    X[:] = 0
    np.testing.assert_array_equal(run(images, store), want)


def test_one_cache_folder_holds_several_protocols_without_mixing_rows(tmp_path, computed):
    images, store = pixels(2), tmp_path / "store"
    variants = [
        {},
        dict(scales=(32,)),
        dict(scales=(32,), flip=False),
        dict(net=tiny_net(seed=1)),
        dict(aggregate="stack"),
    ]
    refs = [run(images, **kw) for kw in variants]  # no store
    computed[0] = 0
    for kw, ref in zip(variants, refs):
        np.testing.assert_allclose(run(images, store, **kw), ref, atol=1e-6)
    assert computed[0] == 2 * len(variants)
    for kw, ref in zip(variants, refs):  # each served from its own store, none from another's
        np.testing.assert_allclose(run(images, store, **kw), ref, atol=1e-6)
    assert computed[0] == 2 * len(variants)
    manifests = [json.loads(m.read_text()) for m in (store / "fc7").glob("*/manifest.json")]
    assert len(manifests) == len(variants) and count_rows(store) == 2 * len(variants)
    libs = manifests[0]["libraries"]  # the resize and decoding code is part of the protocol
    assert libs == {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
    }


def test_cache_folders_of_earlier_layouts_are_refused_with_what_to_do(tmp_path):
    images, old = pixels(2), tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text('{"version": 1, "n": 2}')
    with pytest.raises(ValueError, match=r"format 1: the whole-list cache.*one store per layer and protocol"):
        run(images, old)
    (old / "manifest.json").write_text('{"version": 2, "dims": [32]}')  # one layer per folder
    with pytest.raises(ValueError, match=r"format 2: one layer per folder.*Delete"):
        run(images, old)
    (old / "manifest.json").unlink()
    (old / "fc7").mkdir()  # the store of one protocol per layer
    (old / "fc7" / "manifest.json").write_text('{"version": 2, "dims": [32]}')
    with pytest.raises(ValueError, match=r"format 2: one store per layer, whose image keys.*Delete .*fc7"):
        run(images, old)


def test_file_replaced_by_a_copy_keeping_size_and_mtime_is_recomputed(tmp_path, computed):
    path, other = tmp_path / "x.bmp", tmp_path / "y.bmp"  # uncompressed: the same size
    old, new = pixels(2, seed=5)[0], pixels(2, seed=6)[0]
    Image.fromarray(old).save(path)
    Image.fromarray(new).save(other)
    os.utime(other, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    store = tmp_path / "store"
    run([path], store)
    shutil.copy2(other, path)  # as cp -p, rsync -a, tar and unzip do: size and mtime kept
    assert path.stat().st_size == other.stat().st_size and path.stat().st_mtime_ns == other.stat().st_mtime_ns
    computed[0] = 0
    np.testing.assert_allclose(run([path], store), run([new]), atol=1e-6)
    assert computed[0] == 2


def _flip_a_row_byte(chunk: Path) -> None:
    with np.load(chunk) as z:
        first = z["rows"][0].tobytes()
    data = bytearray(chunk.read_bytes())
    at = data.find(first) + 5
    data[at] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_damaged_chunk_is_skipped_with_one_warning_and_its_rows_recomputed(pngs, tmp_path, computed, caplog):
    store = tmp_path / "store"
    ref = run(pngs[:6])
    run(pngs[:3], store)
    run(pngs[3:6], store)
    chunks = sorted((store / "fc7").glob("*/chunks/*.npz"))
    assert len(chunks) == 2
    with np.load(chunks[0]) as z:
        lost = len(z["keys"])
    _flip_a_row_byte(chunks[0])
    computed[0] = 0
    with caplog.at_level("WARNING", "vggfeat"):
        X = run(pngs[:6], store)
    np.testing.assert_allclose(X, ref, atol=1e-6)
    assert computed[0] == lost == 3  # only the damaged chunk's rows
    said = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(said) == 1 and chunks[0].name in said[0] and "recomputed" in said[0]
    computed[0] = 0
    np.testing.assert_allclose(run(pngs[:6], store), ref, atol=1e-6)  # the new rows serve later runs
    assert computed[0] == 0


def test_compact_merges_chunks_and_serves_the_same_rows(pngs, tmp_path, computed):
    store = tmp_path / "store"
    ref = run(pngs)
    for lo in range(0, 12, 3):
        run(pngs[lo : lo + 3], store)
    run(pngs[:6], store, scales=(32,))  # a second protocol in the same folder
    chunks = lambda: sorted(store.rglob("chunks/*.npz"))  # noqa: E731
    assert len(chunks()) == 4 + 1
    r = vggfeat_command("store", "compact", store)
    assert r.returncode == 0, r.stderr
    assert len(chunks()) == 2 and "4 chunks -> 1" in r.stdout
    computed[0] = 0
    np.testing.assert_allclose(run(pngs, store), ref, atol=1e-6)
    np.testing.assert_allclose(run(pngs[:6], store, scales=(32,)), run(pngs[:6], scales=(32,)), atol=1e-6)
    assert computed[0] == 6  # only the reference run: every stored row was served
    assert count_rows(store) == 12 + 6


def test_compact_refuses_while_a_writer_runs(pngs, tmp_path):
    store = tmp_path / "store"
    run(pngs[:2], store)
    (one,) = stores(store)
    with one.writing():  # this process writing now
        with pytest.raises(StoreBusy, match=rf"being written by .*pid {os.getpid()}"):
            compact(store)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (one.root / "writers" / "dead.json").write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)})
    )  # a writer that was killed
    assert compact(store)[0][1:] == (1, 1)
    r = vggfeat_command("store", "compact", tmp_path / "nothing")
    assert r.returncode == 2 and "no feature store under" in r.stderr


class Pairs(torch.utils.data.Dataset):
    """(image, label) items, as torchvision datasets give them."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], i % 2


def test_torch_dataset_needs_paths_or_keys(pngs, tmp_path, computed):
    store = tmp_path / "store"
    tensors = [torch.from_numpy(a).permute(2, 0, 1) for a in pixels(3)]
    with pytest.raises(ValueError, match=r"torch Dataset are Tensors, not file paths\. Pass keys="):
        run(Pairs(tensors), store)
    computed[0] = 0
    X = vggfeat.extract(Pairs(tensors), model=tiny_net(), cache=store, keys=["a", "b", "c"], **KW)
    np.testing.assert_allclose(X, run(tensors), atol=1e-6)
    again = vggfeat.extract(Pairs(tensors[:2]), model=tiny_net(), cache=store, keys=["b", "a"], **KW)
    np.testing.assert_allclose(again, X[[1, 0]], atol=1e-6)
    assert computed[0] == 3 + 3  # the keyed run, the reference; the second keyed run computed none
    np.testing.assert_allclose(run(Pairs(pngs[:3]), store), run(pngs[:3]), atol=1e-6)  # items are paths
    with pytest.raises(ValueError, match="pass cache= too"):
        vggfeat.extract(tensors, model=tiny_net(), keys=["a", "b", "c"], **KW)


def test_grid_search_over_a_cached_transformer_computes_each_image_once(tmp_path, computed):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from vggfeat.features.sklearn import VGGFeatures

    imgs = [np.full((32, 32 + i, 3), 20 + 3 * i, np.uint8) for i in range(6)]
    imgs += [np.full((32, 32 + i, 3), 230 - 3 * i, np.uint8) for i in range(6)]
    y = np.array([0] * 6 + [1] * 6)
    net = tiny_net()
    feats = VGGFeatures(model=net, scales=(32,), cache=tmp_path / "store", num_workers=0, progress=False)
    gs = GridSearchCV(make_pipeline(feats, LinearSVC()), {"linearsvc__C": [0.1, 10.0]}, cv=3)
    gs.fit(imgs, y)  # each fold passes another subset of the images
    assert computed[0] == 12
    assert gs.best_estimator_.predict(imgs).shape == (12,) and computed[0] == 12
    Z = VGGFeatures(model=net, scales=(32,), progress=False).fit_transform(imgs)
    np.testing.assert_allclose(gs.best_estimator_[0].transform(imgs), Z, atol=1e-6)


def _popen(store, delay, files):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, KILL, str(store), str(delay), *map(str, files)], env=env)


def test_two_processes_writing_one_store_leave_it_consistent(pngs, tmp_path, computed):
    store = tmp_path / "store"
    a, b = _popen(store, 0, pngs[:8]), _popen(store, 0, pngs[4:])  # overlapping on 4 images
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    assert count_rows(store) == 12
    assert not [p for p in (stores(store)[0].chunks).iterdir() if p.name.startswith(".")]  # no leftovers
    computed[0] = 0
    np.testing.assert_allclose(run(pngs, store), run(pngs), atol=1e-6)
    assert computed[0] == 12  # the reference only: every row came from the store


@pytest.mark.slow
def test_killed_run_loses_only_unflushed_rows(pngs, tmp_path, monkeypatch):
    files = []
    for i, a in enumerate(pixels(21, seed=7)):
        files.append(tmp_path / "many" / f"{i:02d}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(a).save(files[-1])
    store = tmp_path / "store"
    proc = _popen(store, 0.3, files)
    deadline, done = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None and not 3 <= done <= len(files) - 6:
        time.sleep(0.2)
        done = count_rows(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = count_rows(store)
    assert 3 <= done < len(files), f"could not kill the run midway (rows stored: {done})"
    loaded = []
    real_open = vggfeat.data.decode.open_image
    monkeypatch.setattr(vggfeat.data.decode, "open_image", lambda p: loaded.append(p) or real_open(p))
    X = run(files, store)
    assert len(loaded) == len(files) - done
    np.testing.assert_allclose(X, run(files), atol=1e-6)


@pytest.mark.parametrize("nets", [1, 2])
def test_unreadable_images_are_not_stored_and_are_reported_at_their_indices(pngs, tmp_path, computed, nets):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    inputs, store = [pngs[0], bad, pngs[1], bad], tmp_path / "store"
    model = tiny_net() if nets == 1 else (tiny_net(0), tiny_net(1))  # late fusion: a part per net
    for _ in range(2):  # the second run serves the good rows and tries the bad file again
        ext = vggfeat.Extractor(model, cache=store, on_error="skip", **KW)
        with pytest.warns(UserWarning, match="2 image"):
            X = ext(inputs)
        assert [i for i, _, _ in ext.failures_] == [1, 3] and "bad.png" in ext.failures_[0][1]
        assert np.isnan(X[[1, 3]]).all() and computed[0] == 2 * nets
    np.testing.assert_allclose(X[[0, 2]], run(pngs[:2], net=model), atol=1e-6)
    assert count_rows(store) == 2


@pytest.mark.slow
def test_two_ranks_compute_one_share_each_of_the_missing_images(pngs, tmp_path, computed):
    import socket

    store = tmp_path / "store"
    run(pngs[:6], store)
    before = {p.name for p in (stores(store)[0].chunks).iterdir()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
    ]
    cmd = [*torchrun, f"--master_port={port}", KILL, str(store), "0", *map(str, pngs)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    new = {p.name for p in (stores(store)[0].chunks).iterdir()} - before
    writers = {name.rsplit("-", 2)[0] for name in new}  # <host>-<pid>-<id>
    assert len(writers) == 2, new  # both ranks wrote rows ...
    rows = sum(len(np.load(stores(store)[0].chunks / name)["keys"]) for name in new)
    assert rows == 6  # ... and no missing image twice (3 each)
    assert count_rows(store) == 12
    computed[0] = 0
    np.testing.assert_allclose(run(pngs, store), run(pngs), atol=1e-6)
    assert computed[0] == 12  # the reference only


def test_hf_dataset_with_a_transform_is_keyed_by_what_the_transform_gives(tmp_path, computed):
    import datasets

    arrays = pixels(3, seed=7)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in arrays]})
    ds = ds.cast_column("image", datasets.Image())

    def mirror(batch):  # handles decoded PIL images only, as users write them
        batch["image"] = [im.transpose(Image.FLIP_TOP_BOTTOM) for im in batch["image"]]
        return batch

    store = tmp_path / "store"
    plain = run(ds, store)  # the untransformed rows are stored first
    flipped = [a[::-1] for a in arrays]
    for lazy in (ds.with_transform(mirror), _set_transform(ds, mirror)):
        np.testing.assert_allclose(run(lazy, store), run(flipped), atol=1e-6)
    computed[0] = 0
    np.testing.assert_allclose(run(ds.with_transform(mirror), store), run(flipped), atol=1e-6)
    np.testing.assert_allclose(run(ds, store), plain, atol=1e-6)  # both kinds of rows kept apart
    assert computed[0] == 3  # the reference only: transformed rows served from the store
    assert not np.allclose(plain, run(flipped), atol=1e-3)


def _set_transform(ds, fn):
    ds = ds.select(range(len(ds)))  # a copy: set_transform works in place
    ds.set_transform(fn)
    return ds
