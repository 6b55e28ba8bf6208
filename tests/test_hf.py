"""Hugging Face datasets: add_features streams through Dataset.map (DatasetDict, IterableDataset,
several layers), its fingerprint comes from public information, and the plain
``ds.map(Extractor(...), batched=True)`` recipe. Values are checked against extract on the same
images. Tiny nets (crop 32) on small in-memory images."""

import inspect
import re

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import vggfeat
import vggfeat.features.dense
import vggfeat.features.hf
import vggfeat.hf
from vggfeat.features.hf import add_features


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10, crop=32).eval()


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32 + i % 3, 32 + i % 5, 3), dtype=np.uint8) for i in range(n)]


def image_ds(arrays, **columns):
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in arrays], **columns})
    return ds.cast_column("image", datasets.Image())


KW = dict(scales=(32, 48), num_workers=0, progress=False)


def ref(arrays, net, **kw):
    return vggfeat.extract(arrays, model=net, **{**KW, **kw})


@pytest.fixture
def calls(monkeypatch):
    """The number of images of each call of an Extractor (one per map batch)."""
    seen = []
    real = vggfeat.Extractor.__call__
    monkeypatch.setattr(
        vggfeat.Extractor, "__call__", lambda self, x, **k: seen.append(len(x)) or real(self, x, **k)
    )
    return seen


def column(ds, name="features"):
    return np.array(ds[name], dtype=np.float32)


def test_dataset_streams_through_map_in_batches_with_every_column_kept(calls):
    arrays, net = pixels(7), tiny_net()
    ds = image_ds(arrays, label=list(range(7)))
    out = add_features(ds, model=net, map_batch_size=3, **KW)
    assert calls == [3, 3, 1]  # never more than one map batch of images in memory
    assert out.column_names == ["image", "label", "features"] and out["label"] == list(range(7))
    assert out.features["features"].feature.dtype == "float32"
    np.testing.assert_allclose(column(out), ref(arrays, net), atol=1e-6)
    assert isinstance(out[0]["image"], Image.Image)  # the image column decodes as before


def test_fingerprint_is_public_and_reuses_the_arrow_cache_on_disk(tmp_path, calls):
    assert not re.search(r"\w\._\w", inspect.getsource(vggfeat.features.hf))  # no private attribute read
    arrays, net = pixels(6, seed=1), tiny_net()
    image_ds(arrays, row=list(range(6))).save_to_disk(tmp_path / "ds")
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    want = ref(arrays, net)
    calls.clear()
    out = add_features(ds, model=net, **KW)
    assert sum(calls) == 6 and out.cache_files  # the rows were written to Arrow on disk
    np.testing.assert_allclose(column(out), want, atol=1e-6)
    again = add_features(ds, model=net, **KW)  # same images, same protocol: datasets' cache file
    assert sum(calls) == 6
    np.testing.assert_array_equal(column(again), column(out))
    # other rows of the same length, schema and files (a shuffle) must not be served the cache
    shuffled = ds.shuffle(seed=0)
    moved = add_features(shuffled, model=net, **KW)
    perm = shuffled["row"]
    assert sum(calls) == 12 and moved["row"] == perm != list(range(6))
    np.testing.assert_allclose(column(moved), want[perm], atol=1e-6)
    add_features(ds, model=net, **{**KW, "scales": (32,)})  # other protocol: computed again
    assert sum(calls) == 18


def test_dataset_dict_gets_features_on_each_split():
    net, a, b = tiny_net(), pixels(3, seed=2), pixels(2, seed=3)
    dd = datasets.DatasetDict(train=image_ds(a), test=image_ds(b))
    out = add_features(dd, model=net, column="feats", **KW)
    assert isinstance(out, datasets.DatasetDict) and set(out) == {"train", "test"}
    np.testing.assert_allclose(column(out["train"], "feats"), ref(a, net), atol=1e-6)
    np.testing.assert_allclose(column(out["test"], "feats"), ref(b, net), atol=1e-6)


def test_iterable_dataset_is_mapped_lazily(calls):
    arrays, net = pixels(5, seed=4), tiny_net()
    want = ref(arrays, net)
    stream = image_ds(arrays, label=list(range(5))).to_iterable_dataset()
    calls.clear()
    out = add_features(stream, model=net, map_batch_size=2, **KW)
    assert isinstance(out, datasets.IterableDataset) and sum(calls) == 0  # nothing run yet
    rows = list(out)
    assert sum(calls) == 5 and [r["label"] for r in rows] == list(range(5))
    assert isinstance(rows[0]["image"], Image.Image)
    np.testing.assert_allclose(np.array([r["features"] for r in rows], np.float32), want, atol=1e-6)
    both = datasets.IterableDatasetDict(train=stream)
    np.testing.assert_allclose(
        np.array([r["features"] for r in add_features(both, model=net, **KW)["train"]], np.float32),
        want,
        atol=1e-6,
    )


def test_several_layers_give_a_column_each():
    arrays, net = pixels(3, seed=5), tiny_net()
    out = add_features(image_ds(arrays), model=net, layer=("pool5", "fc7"), **KW)
    assert out.column_names == ["image", "features_pool5", "features_fc7"]
    for layer in ("pool5", "fc7"):
        np.testing.assert_allclose(column(out, f"features_{layer}"), ref(arrays, net, layer=layer), atol=1e-6)


def test_plain_map_recipe_with_an_extractor(tmp_path):
    arrays, net = pixels(4, seed=6), tiny_net()
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")  # a batch of one column named "path"
    by_path = vggfeat.Extractor(net, **KW)({"path": [str(tmp_path / "a.png")]})
    np.testing.assert_allclose(by_path["features"], ref(arrays[:1], net), atol=1e-6)
    ds = image_ds(arrays, label=[0, 1, 0, 1])
    out = ds.map(vggfeat.Extractor(net, **KW), batched=True, batch_size=3)
    assert out.column_names == ["image", "label", "features"]
    np.testing.assert_allclose(column(out, "features"), ref(arrays, net), atol=1e-6)
    several = ds.map(vggfeat.Extractor(net, layer=("fc6", "fc7"), **KW), batched=True)
    np.testing.assert_allclose(column(several, "features_fc6"), ref(arrays, net, layer="fc6"), atol=1e-6)
    with pytest.raises(ValueError, match="no column of this batch holds images"):
        vggfeat.Extractor(net, **KW)({"label": [0, 1]})


def test_add_features_refuses_what_is_not_a_dataset():
    with pytest.raises(TypeError, match="call vggfeat.extract"):
        add_features(pixels(2), model=tiny_net(), **KW)


RANK_SCRIPT = """
import json, sys
import datasets, torch
import vggfeat, vggfeat.features.dense
from vggfeat.features.distributed import process_state
from vggfeat.hf import add_features

computed, writers = [], []
run_shard = vggfeat.features.dense.DenseEngine._run_shard
def counting(self, source, todo, *a, **k):
    computed.append(len(todo))
    return run_shard(self, source, todo, *a, **k)
vggfeat.features.dense.DenseEngine._run_shard = counting
init = datasets.arrow_writer.ArrowWriter.__init__
def recording(self, *a, **k):
    writers.append(str(k.get("path")))
    init(self, *a, **k)
datasets.arrow_writer.ArrowWriter.__init__ = recording

state = process_state()
torch.manual_seed(0)
net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10, crop=32).eval()
ds = datasets.load_from_disk(sys.argv[1])
kw = dict(model=net, scales=(32, 48), num_workers=0, progress=False, map_batch_size=4)
first = add_features(ds, **kw)
runs = [dict(computed=sum(computed), writers=list(writers))]
again = add_features(ds, **kw)  # the file is there: read by every rank, computed by none
runs.append(dict(computed=sum(computed) - runs[0]["computed"], writers=writers[len(runs[0]["writers"]):]))
out = dict(world=state.num_processes, rank=state.process_index, runs=runs,
           first=list(first["features"]), again=list(again["features"]), label=list(first["label"]))
with open(f"{sys.argv[2]}.{state.process_index}.json", "w") as f:
    json.dump(out, f)
"""


@pytest.mark.slow
def test_two_ranks_share_the_work_and_the_main_process_writes_once(tmp_path):
    import json

    from conftest import torchrun

    arrays, net = pixels(7, seed=7), tiny_net()
    image_ds(arrays, label=list(range(7))).save_to_disk(tmp_path / "ds")
    (tmp_path / "ranks.py").write_text(RANK_SCRIPT)
    r = torchrun(2, tmp_path / "ranks.py", tmp_path / "ds", tmp_path / "out", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"out.{k}.json").read_text()) for k in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    first, again = [r["runs"][0] for r in ranks], [r["runs"][1] for r in ranks]
    # map batches of 4, 4 and 3 images, each split between the ranks: 4 + 3 images apiece
    assert [f["computed"] for f in first] == [4, 3]
    # one temporary file in the dataset's folder, renamed to the column's Arrow file
    assert len(first[0]["writers"]) == 1 and first[0]["writers"][0].startswith(str(tmp_path / "ds"))
    assert first[1]["writers"] == []  # the other rank writes nothing
    assert len(list((tmp_path / "ds").glob("vggfeat-*.arrow"))) == 1
    assert [a["computed"] for a in again] == [0, 0] and again[0]["writers"] == again[1]["writers"] == []
    want = ref(arrays, net)
    for r in ranks:
        assert r["label"] == list(range(7))
        np.testing.assert_allclose(np.array(r["first"], np.float32), want, atol=1e-6)
        np.testing.assert_allclose(np.array(r["again"], np.float32), want, atol=1e-6)
