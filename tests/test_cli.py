"""The ``vggfeat`` command and the benchmark scripts' shared options: ImageNet weights by default,
random weights only when asked (and said loudly), missing weights as one line, and each output
written once when several ranks run the command."""

import argparse
import json
import re
from dataclasses import fields

import numpy as np
import pytest
import torch
from conftest import random_image, script, torchrun

import vggfeat
from vggfeat import cli
from vggfeat.cli import common
from vggfeat.features import distributed
from vggfeat.options import add_options

TINY = ["--width", "0.0625", "--fc-dim", "32", "--scales", "224", "--quiet"]
SCRIPTS = ("voc_svm", "caltech_svm", "voc_action_svm", "ilsvrc_eval")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i, (h, w) in enumerate([(240, 300), (256, 256), (230, 250)]):
        random_image(h, w, seed=i).save(tmp_path / "imgs" / f"{i}.png")
    return tmp_path / "imgs"


def test_weights_default_to_imagenet_and_none_means_random():
    p = argparse.ArgumentParser()
    add_options(p, common.FeatureOptions)
    pick = lambda argv, **kw: common.models_and_weights(p.parse_args(argv), **kw)
    assert pick([]) == (["D"], ["default"])
    assert pick([], default=("D", "E")) == (["D", "E"], ["default", "default"])
    assert pick(["--weights", "none"], default=("D", "E")) == (["D", "E"], [None, None])
    two = ["--model", "D", "--weights", "d.pth", "--model", "E", "--weights", "NONE"]
    assert pick(two) == (["D", "E"], ["d.pth", None])
    assert pick(["--weights", "d.pth"], from_files=True) == ([None], ["d.pth"])
    with pytest.raises(SystemExit, match="one per --model"):
        pick(["--model", "D", "--model", "E", "--weights", "d.pth"])
    assert "'none' (RANDOM weights" in " ".join(p.format_help().split())


def test_extract_uses_imagenet_weights_by_default(fake_vgg16, folder, tmp_path):
    out = tmp_path / "x.npy"
    assert cli.main(["extract", str(folder / "0.png"), "--out", str(out), "--scales", "224", "--quiet"]) == 0
    (net,) = json.loads(out.with_name(out.name + ".json").read_text())["models"]
    assert net["config"] == "D" and net["fingerprint"] == vggfeat.fingerprint(
        vggfeat.vgg("D", weights="default")
    )


def _one_line_naming_the_file(err: str) -> None:
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "error" in x]
    assert "vgg16-397923af.pth" in line and "hub/checkpoints" in line


def test_missing_imagenet_weights_are_one_line(torch_home, folder, tmp_path, capsys):
    assert cli.main(["extract", str(folder), "--out", str(tmp_path / "x.npy")]) == 2
    _one_line_naming_the_file(capsys.readouterr().err)
    val = tmp_path / "val" / "n01"  # ILSVRC val as class folders
    val.mkdir(parents=True)
    random_image(230, 250).save(val / "0.png")
    for name in SCRIPTS:  # the SVM scripts fail before reading their (here absent) data
        mod = script(name)
        where = ["--data", str(val.parent)] if name == "ilsvrc_eval" else ["--root", str(tmp_path)]
        cfg = mod.config_from_args(mod.get_args_parser().parse_args(where))
        with pytest.raises(SystemExit) as e:
            common.run_script(mod.main, cfg)
        assert e.value.code == 2, name
        _one_line_naming_the_file(capsys.readouterr().err)


def test_random_weights_are_seeded_and_announced(folder, tmp_path, caplog):
    args = ["extract", str(folder), "--weights", "none", *TINY]
    assert cli.main([*args, "--out", str(tmp_path / "a.npy")]) == 0
    assert "RANDOM WEIGHTS (--weights none)" in caplog.text
    assert cli.main([*args, "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_random_nets_are_built_without_touching_the_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    nets = common.build_nets(["A", "D"], [None, None], width=0.0625, fc_dim=32, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random numbers are unchanged
    for k, (config, net) in enumerate(zip("AD", nets)):  # each net: the one seed + k gives
        torch.manual_seed(5 + k)
        assert vggfeat.fingerprint(net) == vggfeat.fingerprint(vggfeat.vgg(config, width=0.0625, fc_dim=32))


def test_options_and_help_do_no_work_until_the_nets_are_built(monkeypatch, capsys):
    o = common.NetOptions(models=["D", "E"], weights=["d.pth"])  # constructing checks nothing
    assert (o.models, o.weights) == (["D", "E"], ["d.pth"])
    with pytest.raises(SystemExit, match="2 --model but 1 --weights"):
        common.resolve_models(o)
    built = []
    init = vggfeat.nets.models.VGG.__init__
    monkeypatch.setattr(
        vggfeat.nets.models.VGG, "__init__", lambda self, *a, **k: built.append(init(self, *a, **k))
    )
    for name in SCRIPTS:
        with pytest.raises(SystemExit):
            script(name).get_args_parser().parse_args(["--help"])
    for command in ("evaluate", "info", "convert", "toy", "store"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
    from vggfeat.cli.command import build_parser

    build_parser().parse_args(["extract", "photos", "--out", "f.npy"])  # extract's help alone counts costs
    assert "--model" in capsys.readouterr().out and built == []


@pytest.mark.slow
def test_two_ranks_write_each_output_once(folder, tmp_path):
    out = tmp_path / "two.npy"
    r = torchrun(2, "-m", "vggfeat.cli", "extract", folder, "--out", out, "--weights", "none", *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("RANDOM WEIGHTS") == 2  # both ranks ran the command ...
    assert r.stdout.count("wrote") == 1  # ... and one wrote the outputs
    assert (
        cli.main(["extract", str(folder), "--out", str(tmp_path / "one.npy"), "--weights", "none", *TINY])
        == 0
    )
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "one.npy"), atol=1e-6)
    assert json.loads(out.with_name(out.name + ".json").read_text())["shape"] == [3, 32]


def test_downloads_run_on_the_main_process():
    calls = []
    distributed.on_main_process(calls.append, "VOC2007")  # one process: it is the main one
    assert calls == ["VOC2007"] and distributed.is_main_process()


# -- vggfeat extract: help, inputs, outputs ---------------------------------------------------
def test_extract_help_shows_every_default_the_cost_and_examples(capsys):
    from torch.utils.flop_counter import FlopCounterMode

    from vggfeat.cli.extract import ExtractOptions, protocol_cost

    with pytest.raises(SystemExit):
        cli.main(["extract", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    entries = {
        e.split()[0].rstrip(","): " ".join(e.split())
        for e in re.split(r"\n  (?=-)", text.split("options:")[1])
        if e.strip()
    }
    for f in fields(ExtractOptions):
        flag = {"models": "--model", "layers": "--layer"}.get(f.name, "--" + f.name.replace("_", "-"))
        entry = entries[flag]
        assert "default:" in entry or (f.name == "out" and "(required)" in entry), entry
    assert text.count("vggfeat extract ") >= 2 and "--no-normalize" in text and "--list" in text

    # the cost, counted independently: torch's flop counter over the dense net, on the meta device
    def flops(h, w):
        with torch.device("meta"), FlopCounterMode(display=False) as fc:
            vggfeat.vgg("D").dense()(torch.empty(1, 3, h, w), "fc7")
        return fc.get_total_flops()

    square = 2 * sum(flops(q, q) for q in (256, 384, 512)) / flops(224, 224)
    assert protocol_cost() == pytest.approx(square) and 20 < square < 22
    assert f"{square:.0f}x the network cost of one 224 x 224 crop" in flat
    assert f"{protocol_cost(aspect=4 / 3):.0f}x for a 4:3 one" in flat


def test_extract_reads_folders_and_a_list_and_writes_parquet_with_the_paths(folder, tmp_path):
    import pyarrow.parquet as pq

    other = tmp_path / "other"
    other.mkdir()
    random_image(260, 230, seed=7).save(other / "x.png")
    (tmp_path / "files.txt").write_text(f"imgs/1.png\n\n{folder / '0.png'}\n")  # read literally: no comments
    out = tmp_path / "f.parquet"
    argv = ["extract", str(folder), str(other), "--list", str(tmp_path / "files.txt"), "--weights", "none"]
    assert cli.main([*argv, *TINY, "--out", str(out)]) == 0
    table = pq.read_table(out)
    order = [
        folder / "0.png",
        folder / "1.png",
        folder / "2.png",
        other / "x.png",
        folder / "1.png",
        folder / "0.png",
    ]
    assert table.column("id").to_pylist() == [str(p) for p in order]
    X = np.stack(table.column("features").to_numpy(zero_copy_only=False))
    torch.manual_seed(0)  # what --weights none builds for the first net
    net = vggfeat.vgg("D", weights=None, width=0.0625, fc_dim=32)
    ref = vggfeat.extract([str(p) for p in order], model=net, scales=(224,), progress=False)
    np.testing.assert_allclose(X, ref, atol=1e-5)
    assert json.loads(table.schema.metadata[b"vggfeat"])["scales"] == [224]  # no sidecar: inside


def test_extract_no_normalize_and_a_saved_hf_dataset_with_its_image_column(tmp_path):
    import datasets

    pics = [random_image(230 + 10 * i, 250, seed=i) for i in range(3)]
    ds = datasets.Dataset.from_dict({"label": [0, 1, 0], "img": pics}).cast_column("img", datasets.Image())
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "raw.npy"
    argv = ["extract", str(tmp_path / "ds"), "--image-column", "img", "--no-normalize", "--weights", "none"]
    assert cli.main([*argv, *TINY, "--out", str(out)]) == 0
    X = np.load(out)
    torch.manual_seed(0)
    net = vggfeat.vgg("D", weights=None, width=0.0625, fc_dim=32)
    ref = vggfeat.extract(pics, model=net, scales=(224,), normalize=False, progress=False)
    np.testing.assert_allclose(X, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.linalg.norm(X, axis=1), 1)  # not L2-normalised
    assert json.loads(out.with_name(out.name + ".json").read_text())["rows"] == [0, 1, 2]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["missing_dir"], "missing_dir: no such image file or folder"),
        (["--list", "nolist.txt"], "--list nolist.txt: no such file"),
        ([], "no images"),
    ],
)
def test_extract_input_errors_are_one_line(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["extract", *argv, "--out", "x.npy", "--weights", "none", *TINY]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_extract_refuses_other_suffixes_before_any_work(folder, tmp_path, capsys):
    assert (
        cli.main(["extract", str(folder), "--out", str(tmp_path / "x.csv"), "--weights", "none", *TINY]) == 2
    )
    assert "write .npy or .parquet" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_evaluate_command_reports_the_libraries_errors(tiny, tmp_path, capsys):
    from vggfeat import evaluate

    val = tmp_path / "val"
    for c in range(2):
        (val / f"n0{c}").mkdir(parents=True)
        for i in range(2):
            random_image(230, 240 + 10 * i, seed=10 * c + i).save(val / f"n0{c}" / f"{i}.png")
    m = tiny("A", num_classes=2)
    w = vggfeat.save_weights(m, tmp_path / "a.safetensors")
    argv = ["evaluate", str(val), "--weights", str(w), "--scales", "224", "--no-flip", "--mode", "multicrop"]
    assert cli.main(argv) == 0
    images, labels, _ = evaluate.labels_of(val)
    P = evaluate.posteriors(m, images, scales=(224,), mode="multicrop", flip=False, progress=False)
    expected = f"top-1 error {100 * evaluate.topk_error(P, labels, 1):.2f}%"
    assert expected in capsys.readouterr().out
