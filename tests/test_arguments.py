"""Every numeric argument is range-checked when it is parsed (through vggfeat.options, so every
entry point gets it) and by the Python API; impossible requests are one line before any work."""

import json

import numpy as np
import pytest
import test_cli
import torch
from conftest import random_image, script

import vggfeat
from vggfeat import cli
from vggfeat.errors import ImageError

folder = test_cli.folder  # the fixture: three small images
TINY = ["--weights", "none", "--width", "0.0625", "--fc-dim", "32", "--scales", "224", "--quiet"]


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--threads", "-1", "argument --threads: -1: must be at least 1"),
        ("--threads", "0", "argument --threads: 0: must be at least 1"),  # before: the default
        ("--batch-size", "0", "argument --batch-size: 0: must be at least 1"),
        ("--batch-size", "-1", "argument --batch-size: -1: must be at least 1"),  # before: prefetch_factor
        ("--fc-dim", "0", "argument --fc-dim: 0: must be at least 1"),
        ("--width", "0", "argument --width: 0.0: must be above 0"),  # before: a 1-channel net
        ("--width", "-1", "argument --width: -1.0: must be above 0"),
        ("--scales", "100000", "argument --scales: 100000: must be at least 1 and at most 8192"),
        ("--num-workers", "-1", "argument --num-workers: -1: must be at least 0"),
    ],
)
def test_extract_refuses_out_of_range_numbers_when_parsing(capsys, tmp_path, flag, value, words):
    with pytest.raises(SystemExit) as e:
        cli.main(["extract", str(tmp_path), "--out", str(tmp_path / "f.npy"), flag, value])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_the_python_api_makes_the_same_checks():
    with pytest.raises(ValueError, match="width 0: the channel multiplier must be above 0"):
        vggfeat.vgg("A", width=0)
    with pytest.raises(ValueError, match="fc_dim 0: must be"):
        vggfeat.vgg("A", fc_dim=0)
    net = vggfeat.vgg("A", width=1 / 16, fc_dim=32)
    with pytest.raises(ValueError, match="batch_size 0: must be at least 1"):
        vggfeat.extract([], model=net, batch_size=0)
    with pytest.raises(ValueError, match="num_workers -1"):
        vggfeat.extract([], model=net, num_workers=-1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(folder, tmp_path, capsys):
    assert (
        cli.main(["extract", str(folder), "--out", str(tmp_path / "f.npy"), "--device", "cuda", *TINY]) == 2
    )
    err = capsys.readouterr().err
    assert "device 'cuda': no CUDA device is available here" in err and "Traceback" not in err


def test_cache_pointing_to_a_file_is_one_line(folder, tmp_path, capsys):
    (tmp_path / "c").write_text("x")
    argv = ["extract", str(folder), "--out", str(tmp_path / "f.npy"), "--cache", str(tmp_path / "c"), *TINY]
    assert cli.main(argv) == 2
    assert "--cache" in capsys.readouterr().err


def test_an_image_folder_with_a_stray_dataset_info_is_a_folder(folder, tmp_path):
    (folder / "dataset_info.json").write_text("{}")
    assert cli.main(["extract", str(folder), "--out", str(tmp_path / "f.npy"), *TINY]) == 0
    assert len(json.loads((tmp_path / "f.npy.json").read_text())["rows"]) == 3


def test_a_run_where_every_image_failed_is_not_a_success(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    argv = ["extract", str(tmp_path / "bad.png"), "--out", str(tmp_path / "f.npy"), "--on-error", "skip"]
    assert cli.main([*argv, *TINY]) == 2
    assert "every one of the 1 images failed" in capsys.readouterr().err
    assert not (tmp_path / "f.npy").exists()


def test_an_extreme_image_is_an_image_error_naming_it_before_its_pass(tmp_path, monkeypatch):
    net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, crop=32)
    random_image(40, 40).save(tmp_path / "ok.png")
    random_image(10, 2000, seed=1).save(tmp_path / "wide.png")  # at Q=32: 6400 x 32
    # the limit lies between what the two need: 40x40 -> 32x32, 10x2000 -> 6400x32
    monkeypatch.setenv("VGGFEAT_MAX_ACTIVATION_BYTES", str(4 * 32 * 1000 * 7 * 2))
    files = [str(tmp_path / "ok.png"), str(tmp_path / "wide.png")]
    kw = dict(model=net, scales=(32,), num_workers=0, progress=False)
    with pytest.raises(ImageError, match=r"wide.png: a 2000x10 image rescaled to 6400x32 .*above the limit"):
        vggfeat.extract(files, **kw)
    ext = vggfeat.Extractor(net, on_error="skip", **{k: v for k, v in kw.items() if k != "model"})
    with pytest.warns(UserWarning, match="1 image"):
        X = ext(files)
    assert np.isfinite(X[0]).all() and np.isnan(X[1]).all() and ext.failures_[0][0] == 1
    monkeypatch.setenv("VGGFEAT_MAX_ACTIVATION_BYTES", str(1 << 40))
    assert np.isfinite(vggfeat.extract(files, **kw)).all()  # the limit is the only reason


def test_voc_svm_refuses_a_negative_max_images_and_a_class_given_twice(tmp_path, capsys):
    voc_svm = script("voc_svm")
    with pytest.raises(SystemExit):
        voc_svm.get_args_parser().parse_args(["--root", str(tmp_path), "--max-images", "-1"])
    assert "argument --max-images: -1: must be at least 1" in capsys.readouterr().err  # before: drops one
    args = voc_svm.get_args_parser().parse_args(["--root", str(tmp_path), "--classes", "bowtie", "bowtie"])
    with pytest.raises(ValueError, match="--classes bowtie is given twice"):
        voc_svm.main(voc_svm.config_from_args(args))


def test_convert_keeps_the_training_provenance(tmp_path, capsys):
    net = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=3)
    src = vggfeat.save_weights(
        net, tmp_path / "final.safetensors", provenance="vggfeat.train run 'r': 3 epochs"
    )
    assert cli.main(["convert", str(src), str(tmp_path / "copy.safetensors")]) == 0
    meta = vggfeat.vgg(None, weights=tmp_path / "copy.safetensors").meta
    assert meta["provenance"] == "vggfeat.train run 'r': 3 epochs; converted from final.safetensors"


@pytest.mark.slow
def test_save_weights_on_a_full_disk_keeps_the_old_file_and_is_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    old = vggfeat.save_weights(vggfeat.vgg("A", width=1 / 16, fc_dim=32), tmp_path / "w.safetensors")
    before = old.read_bytes()
    code = (
        "import resource, vggfeat\nfrom vggfeat.cli.common import run_script\n"
        "m = vggfeat.vgg('A', width=1 / 8, fc_dim=64)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))\n"
        f"run_script(vggfeat.save_weights, m, {str(old)!r})\n"
    )
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no space left" in r.stderr and str(tmp_path) in r.stderr, r.stderr
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
