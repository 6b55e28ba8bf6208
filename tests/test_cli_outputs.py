"""``vggfeat extract``'s outputs: the .npy's sidecar is its own, several layers in one pass, a
Hugging Face dataset folder, the layer names in ``--help``, and the crop's scales by default."""

import json
from pathlib import Path

import numpy as np
import pytest
import test_cli
import torch
from conftest import vggfeat_command

import vggfeat
from vggfeat import cli
from vggfeat.cli.extract import sidecar

REPO = Path(__file__).resolve().parents[1]
folder = test_cli.folder  # the fixture: three small images
TINY = ["--weights", "none", "--width", "0.0625", "--fc-dim", "32", "--scales", "224", "--quiet"]


def reference(files, layer, **kw):
    torch.manual_seed(0)  # what --weights none builds for the first net
    net = vggfeat.vgg("D", weights=None, width=0.0625, fc_dim=32)
    return vggfeat.extract(
        [str(f) for f in files], model=net, scales=(224,), layer=layer, progress=False, **kw
    )


@pytest.mark.slow
def test_the_readmes_npy_then_parquet_examples_keep_both_outputs(folder, tmp_path):
    r = vggfeat_command("extract", folder, "--out", "feats.npy", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = (tmp_path / "feats.npy.json").read_text()
    r = vggfeat_command("extract", folder, "--out", "feats.parquet", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "feats.npy.json").read_text() == side  # the .npy's sidecar is untouched
    assert not (tmp_path / "feats.json").exists()  # the parquet file holds ids and protocol itself
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(tmp_path / "feats.parquet").metadata[b"vggfeat"])
    assert (
        meta["layer"] == "fc7"
        and json.loads(side)["rows"] == pq.read_table(tmp_path / "feats.parquet")["id"].to_pylist()
    )
    # rerunning into an existing output says so
    r = vggfeat_command("extract", folder, "--out", "feats.npy", *TINY, cwd=tmp_path)
    assert (
        r.returncode == 0 and "overwriting feats.npy" in r.stderr and "overwriting feats.npy.json" in r.stderr
    )


def test_a_repeated_layer_writes_every_layer_from_one_pass(folder, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from vggfeat.features.dense import DenseEngine

    runs = []
    real = DenseEngine.run
    monkeypatch.setattr(DenseEngine, "run", lambda self, *a, **k: runs.append(1) or real(self, *a, **k))
    layers = ["--layer", "pool5", "--layer", "fc7"]
    assert cli.main(["extract", str(folder), *layers, *TINY, "--out", str(tmp_path / "f.npy")]) == 0
    assert len(runs) == 1  # one pass of the net gives both layers
    files = sorted(folder.iterdir())
    for layer in ("pool5", "fc7"):
        np.testing.assert_allclose(np.load(tmp_path / f"f.{layer}.npy"), reference(files, layer), atol=1e-5)
    side = json.loads(sidecar(tmp_path / "f.npy").read_text())
    assert side["files"] == {"pool5": "f.pool5.npy", "fc7": "f.fc7.npy"} and side["layer"] == ["pool5", "fc7"]
    assert not (tmp_path / "f.npy").exists()
    assert cli.main(["extract", str(folder), *layers, *TINY, "--out", str(tmp_path / "f.parquet")]) == 0
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column_names == ["id", "features_pool5", "features_fc7"]
    X = np.stack(table.column("features_pool5").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(X, reference(files, "pool5"), atol=1e-5)


def test_a_layer_given_twice_or_unknown_is_one_line(folder, tmp_path, capsys):
    argv = ["extract", str(folder), *TINY, "--out", str(tmp_path / "f.npy")]
    assert cli.main([*argv, "--layer", "fc7", "--layer", "fc7"]) == 2
    assert "--layer fc7 is given twice" in capsys.readouterr().err
    assert cli.main([*argv, "--layer", "fc9"]) == 2
    err = capsys.readouterr().err
    assert "fc9" in err and "conv5_3" in err and "Traceback" not in err


def test_extract_help_lists_the_layer_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["extract", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    with torch.device("meta"):
        names = [list(vggfeat.vgg(c).layers) for c in ("D", "E", "A-LRN")]
    for layer in {n for layers in names for n in layers}:  # every config's names, from the nets
        assert layer in flat, layer
    assert "repeat for several layers" in flat.split("--layer NAME ")[-1][:200]


def test_format_hf_writes_a_dataset_with_save_to_disk(folder, tmp_path):
    import datasets

    out = tmp_path / "feats_ds"
    layers = ["--layer", "fc6", "--layer", "fc7"]
    assert cli.main(["extract", str(folder), *layers, *TINY, "--format", "hf", "--out", str(out)]) == 0
    ds = datasets.load_from_disk(str(out))
    files = sorted(folder.iterdir())
    assert ds["id"] == [str(f) for f in files] and ds.column_names == ["id", "features_fc6", "features_fc7"]
    np.testing.assert_allclose(np.array(ds["features_fc6"]), reference(files, "fc6"), atol=1e-5)
    assert json.loads(ds.info.description)["scales"] == [224]
    assert cli.main(["extract", str(folder), *TINY, "--out", str(tmp_path / "x.csv")]) == 2


def test_default_scales_follow_the_crop_the_weights_were_trained_at(folder, tmp_path):
    from conftest import script

    net = vggfeat.vgg("D", crop=64, width=0.0625, fc_dim=32, num_classes=5)
    w = vggfeat.save_weights(net, tmp_path / "d64.safetensors")
    r = vggfeat_command("extract", folder, "--weights", w, "--quiet", "--out", "f.npy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "f.npy.json").read_text())["scales"] == [73, 110, 146]  # 256.. x 64/224
    np.testing.assert_allclose(
        np.load(tmp_path / "f.npy"),
        vggfeat.extract(sorted(folder.iterdir()), model=net, scales=(73, 110, 146), progress=False),
        atol=1e-5,
    )
    voc_svm = script("voc_svm")  # appendix B's five VOC scales, x 64/224
    cfg = voc_svm.config_from_args(voc_svm.get_args_parser().parse_args(["--root", ".", "--weights", str(w)]))
    cfg.build_nets()
    assert cfg.scales == tuple(round(q * 64 / 224) for q in (256, 384, 512, 640, 768))
    cfg = voc_svm.config_from_args(
        voc_svm.get_args_parser().parse_args(["--root", ".", "--weights", str(w), "--scales", "80"])
    )
    cfg.build_nets()
    assert cfg.scales == (80,)  # given scales are kept


# -- vggfeat toy, vggfeat info FILE --------------------------------------------------------------
def test_toy_command_writes_the_same_data_as_the_library(tmp_path):
    from vggfeat.experiments import toy

    small = ["--source-train", "1", "--source-val", "1", "--target-train", "2", "--target-val", "2"]
    r = vggfeat_command("toy", "data", *small, "--target-test", "2", "--seed", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "data/source" in r.stdout and "data/VOCdevkit" in r.stdout
    cfg = toy.ToyConfig(seed=3, source_train=1, source_val=1, target_train=2, target_val=2, target_test=2)
    toy.generate(tmp_path / "ref", cfg)
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    got, want = files(tmp_path / "data"), files(tmp_path / "ref")
    assert got == want and any(k.startswith("VOCdevkit/VOC2007/JPEGImages/") for k in got)


def test_info_takes_a_file_and_shows_its_class_names(tiny, tmp_path):
    m = tiny("A", num_classes=3)
    w = vggfeat.save_weights(m, tmp_path / "a.safetensors", class_names=["cat", "dog", "eel"])
    r = vggfeat_command("info", w, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["class_names"] == ["cat", "dog", "eel"] and info["fingerprint"] == vggfeat.fingerprint(m)
    assert "fc7" in info["layers"] and info["arch"]["config"] == "A"


def test_info_of_a_configuration_lists_its_layers(capsys):
    assert cli.main(["info", "--model", "A-LRN"]) == 0
    info = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        assert info["layers"] == list(vggfeat.vgg("A-LRN").layers) and "norm1" in info["layers"]
