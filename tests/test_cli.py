"""The ``vggfeat`` command and the benchmark scripts' shared options: ImageNet weights by default,
random weights only when asked (and said loudly), missing weights as one line, and each output
written once when several ranks run the command."""

import argparse
import json

import numpy as np
import pytest
from conftest import random_image, script, torchrun

import vggfeat
from vggfeat import cli

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
    cli.add_model_args(p)
    pick = lambda argv, **kw: cli.models_and_weights(p.parse_args(argv), **kw)
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
    (net,) = json.loads(out.with_suffix(".json").read_text())["models"]
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
            cli.run_script(mod.main, cfg)
        assert e.value.code == 2, name
        _one_line_naming_the_file(capsys.readouterr().err)


def test_random_weights_are_seeded_and_announced(folder, tmp_path, caplog):
    args = ["extract", str(folder), "--weights", "none", *TINY]
    assert cli.main([*args, "--out", str(tmp_path / "a.npy")]) == 0
    assert "RANDOM WEIGHTS (--weights none)" in caplog.text
    assert cli.main([*args, "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


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
    assert json.loads(out.with_suffix(".json").read_text())["shape"] == [3, 32]


def test_downloads_run_on_the_main_process():
    calls = []
    cli.on_main_process(calls.append, "VOC2007")  # one process: it is the main one
    assert calls == ["VOC2007"] and cli.is_main_process()
