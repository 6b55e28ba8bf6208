"""benchmarks/ilsvrc_eval.py end to end on a tiny ImageFolder tree and a saved HF dataset."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image, script, vggfeat_command

import vggfeat
from vggfeat import evaluate

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "ilsvrc_eval.py"


def run(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_ilsvrc_eval_tables_and_fusion(tmp_path, tiny):
    val = tmp_path / "val"
    for c in range(2):
        for i in range(2 - c):
            (val / f"n0{c}").mkdir(parents=True, exist_ok=True)
            random_image(230 + 20 * i, 250, seed=10 * c + i).save(val / f"n0{c}" / f"{i}.jpg")
    d, e = tiny("D", seed=1, num_classes=2), tiny("E", seed=2, num_classes=2)
    wd, we = (
        vggfeat.save_weights(d, tmp_path / "d.safetensors"),
        vggfeat.save_weights(e, tmp_path / "e.safetensors"),
    )
    out = tmp_path / "out"
    r = run(
        "--data",
        val,
        "--model",
        "D",
        "--weights",
        wd,
        "--model",
        "E",
        "--weights",
        we,
        "--jitter",
        224,
        256,
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["comparable"] is False and "--jitter 224 256" in " ".join(res["not_comparable"])
    rows = {(x["model"], x["protocol"]): x for x in res["rows"]}
    assert set(rows) == {(m, p) for m in "DE" for p in ("single", "multi", "multicrop", "both")} | {
        ("D&E", "fusion")
    }
    assert rows[("D", "single")]["scales"] == [240] and rows[("D", "multi")]["scales"] == [224, 240, 256]
    assert rows[("D", "both")]["paper_top1"] == 24.4 and rows[("D&E", "fusion")]["paper_top5"] == 6.8
    images, labels, _ = evaluate.labels_of(val)
    P = evaluate.fuse(
        [evaluate.posteriors(m, images, scales=(224, 240, 256), mode="both", progress=False) for m in (d, e)]
    )
    assert np.isclose(rows[("D&E", "fusion")]["top1"], 100 * evaluate.topk_error(P, labels, 1))
    md = (out / "report.md").read_text()
    assert "150-crop evaluation takes" in md
    # a random ranking of the nets' 2 classes: top-1 error 1 - 1/2, top-5 error 0 (by hand)
    assert res["chance"] == {"classes": 2, "top1": 50.0, "top5": 0.0}
    assert "| chance | random ranking of 2 classes | – | 50.00 | 0.00 |" in md


@pytest.mark.slow
def test_ilsvrc_eval_missing_data_and_weights(tmp_path):
    r = run("--data", tmp_path / "nope", "--weights", "x.pth")
    assert r.returncode != 0 and "ImageFolder" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "val" / "a").mkdir(parents=True)
    random_image(64, 64).save(tmp_path / "val" / "a" / "1.jpg")
    r = run("--data", tmp_path / "val", "--weights", tmp_path / "missing.safetensors")
    assert r.returncode != 0 and "missing.safetensors" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ilsvrc_eval_reads_a_saved_hf_dataset(tmp_path, tiny):
    import datasets

    imgs = [random_image(240, 260 + 10 * i, seed=i) for i in range(3)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [0, 1, 1]}, features=feats)
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    a = tiny("A", num_classes=2)
    w = vggfeat.save_weights(a, tmp_path / "a.safetensors")
    r = run(
        "--data",
        tmp_path / "hf",
        "--model",
        "A",
        "--weights",
        w,
        "--protocols",
        "single",
        "--jitter",
        224,
        256,
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    P = evaluate.posteriors(a, imgs, scales=(240,), progress=False)
    assert np.isclose(row["top1"], 100 * evaluate.topk_error(P, [0, 1, 1], 1))


def test_ilsvrc_comparable_only_for_the_paper_protocol():
    mod = script("ilsvrc_eval")
    with torch.device("meta"):
        D, A = vggfeat.vgg("D"), vggfeat.vgg("A")
    D.meta["provenance"] = "caffe VGG_ILSVRC_16_layers.caffemodel"  # as the release's loader records it
    A.meta["provenance"] = D.meta["provenance"]
    with torch.device("meta"):
        tv, tuned = vggfeat.vgg("D"), vggfeat.vgg("D")
    tv.pretrained_cfg["provenance"] = "torchvision VGG16_Weights.IMAGENET1K_V1"  # as _load_torchvision
    tuned.meta["provenance"] = "vggfeat.train run 'voc-ft': VGG-D, S=256, 10 epochs"  # as the trainer
    paper = mod.Config(data="val", models=["D"], weights=["default"])
    assert mod.not_comparable(paper, [D]) == []
    assert mod.not_comparable(paper, [D], images=50_000) == []
    for cfg, nets, kw, why in [
        (replace(paper, jitter=(224, 256)), [D], {}, "--jitter 224 256"),
        (replace(paper, max_images=10), [D], {}, "--max-images 10"),
        (paper, [D], dict(images=1000), "1000 images, not the 50,000 of ILSVRC-2012 val"),
        (replace(paper, models=["A"]), [A], {}, "VGG Net-A: the paper reports no such nets"),
        (replace(paper, models=["A"]), [A], {}, "VGG-A's weights are caffe VGG_ILSVRC_16_layers.caffemodel"),
        (replace(paper, weights=[None]), [D], {}, "random weights"),
        (paper, [tv], {}, "weights are torchvision VGG16_Weights.IMAGENET1K_V1, not the paper's"),
        (paper, [tuned], {}, "weights are vggfeat.train run 'voc-ft'"),
    ]:
        reasons = mod.not_comparable(cfg, nets, **kw)
        assert len(reasons) == 1 + (nets == [A]) and any(why in r for r in reasons)
    reasons = mod.not_comparable(replace(paper, max_images=10, jitter=(224, 256)), [tv])
    assert len(reasons) == 3  # each reason listed on its own


def test_the_authors_release_is_the_papers_weights_until_it_is_fine_tuned(tmp_path):
    from _caffe_writer import write_caffemodel
    from test_caffe import tiny_layers

    from vggfeat.evaluation.plots import not_the_papers_weights

    release = write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", tiny_layers("D"))
    net = vggfeat.vgg(weights=release, width=1 / 16, fc_dim=32)  # the tiny stand-in: D at 1/16
    assert not_the_papers_weights(net) is None
    r = vggfeat_command("convert", release, tmp_path / "d.safetensors")
    assert r.returncode == 0, r.stderr
    converted = vggfeat.vgg(weights=tmp_path / "d.safetensors")
    assert not_the_papers_weights(converted) is None  # a conversion is still the release
    with torch.no_grad():
        converted.classifier[6].bias.add_(0.1)  # fine-tuned in place, provenance untouched
    assert "fine-tuned" in not_the_papers_weights(converted)
    vggfeat.save_weights(converted, tmp_path / "tuned.safetensors")
    assert "fine-tuned" in not_the_papers_weights(vggfeat.vgg(weights=tmp_path / "tuned.safetensors"))
    other = write_caffemodel(tmp_path / "my_finetune.caffemodel", tiny_layers("D"))
    assert "caffe my_finetune.caffemodel, not the paper's" in not_the_papers_weights(
        vggfeat.vgg(weights=other, width=1 / 16, fc_dim=32)
    )
