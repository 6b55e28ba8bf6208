"""ilsvrc_eval.py's progress bar names the protocol it is on, and the script writes the PNG plots
the benchmarks README promises: error per protocol with the chance levels, and error per class."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

import vggfeat
from vggfeat import evaluate

REPO = Path(__file__).resolve().parents[1]


def test_per_class_error_by_hand():
    P = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1, 1, 0])  # class 0: 1 of 2 right; class 1: 1 of 2 right; class 2: no image
    err = evaluate.per_class_error(P, y, k=1)
    assert err[:2].tolist() == [0.5, 0.5] and np.isnan(err[2])
    assert evaluate.per_class_error(P, y, k=2)[:2].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_ilsvrc_eval_bar_names_the_protocol_and_the_plots_are_written(tmp_path, tiny):
    val = tmp_path / "val"
    for c in range(3):
        (val / f"n0{c}").mkdir(parents=True)
        random_image(230, 250, seed=c).save(val / f"n0{c}" / "0.jpg")
    w = vggfeat.save_weights(tiny("D", num_classes=3), tmp_path / "d.safetensors")
    out = tmp_path / "out"
    argv = [
        "--data",
        val,
        "--weights",
        w,
        "--jitter",
        224,
        256,
        "--protocols",
        "single,multicrop",
        "--out",
        out,
    ]
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ilsvrc_eval.py"), *map(str, argv)],
        capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "D single: dense at Q=240" in r.stderr and "D multicrop: multicrop at Q=224,240,256" in r.stderr
    for png in ("protocols.png", "per_class_error.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 300
    res = json.loads((out / "results.json").read_text())
    assert res["plots"] == ["protocols.png", "per_class_error.png"]


def test_protocol_plot_draws_the_chance_levels(tmp_path):
    from vggfeat.evaluation import plots

    rows = [
        dict(model="D", protocol="single", top1=60.0, top5=20.0, paper_top1=25.6, paper_top5=8.1),
        dict(model="D", protocol="multi", top1=55.0, top5=18.0, paper_top1=None, paper_top5=None),
    ]
    png = plots.protocol_errors(tmp_path / "p.png", rows, classes=10)
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    grey = (np.abs(a - (128, 128, 128)).sum(-1) < 30).any()
    assert grey  # the chance lines (90% top-1, 50% top-5 for 10 classes)
    with pytest.raises(ValueError, match="no rows"):
        plots.protocol_errors(tmp_path / "q.png", [], classes=10)


def test_default_jitter_follows_the_crop_of_the_weights(tmp_path):
    from conftest import script

    val = tmp_path / "val"
    for c in range(2):
        (val / f"n0{c}").mkdir(parents=True)
        random_image(120, 130, seed=c).save(val / f"n0{c}" / "0.jpg")
    net = vggfeat.vgg("D", crop=64, width=0.0625, fc_dim=32, num_classes=2)
    w = vggfeat.save_weights(net, tmp_path / "d64.safetensors")
    mod = script("ilsvrc_eval")
    argv = [
        "--data",
        str(val),
        "--weights",
        str(w),
        "--protocols",
        "single,multi",
        "--out",
        str(tmp_path / "o"),
    ]
    rows = mod.main(mod.config_from_args(mod.get_args_parser().parse_args(argv)))
    assert [r["scales"] for r in rows] == [[109], [73, 109, 146]]  # S in [256, 512] x 64/224 = [73, 146]
