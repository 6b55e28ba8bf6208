"""Sec. 3.2 evaluation against a plain per-image reference written here (no engine code)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from vggfeat import evaluate
from vggfeat.dense import crop_grid


def _prep(m, img, q):
    """Resize (smallest side q) and normalise, written out by hand from the stated mean/std."""
    x = TF.pil_to_tensor(img)
    x = TF.resize(x, q, antialias=True).float() / 255
    mean = torch.tensor(m.preprocess.mean).view(3, 1, 1)
    std = torch.tensor(m.preprocess.std).view(3, 1, 1)
    return ((x - mean) / std)[None]


def _dense_scores(m, x):
    """FC layers as convolutions by reshaping the torchvision-layout weights."""
    f = m.features(x)
    fc6, fc7, fc8 = m.classifier[0], m.classifier[3], m.classifier[6]
    h = F.relu(F.conv2d(f, fc6.weight.view(fc6.out_features, f.shape[1], 7, 7), fc6.bias))
    h = F.relu(F.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))
    return F.conv2d(h, fc8.weight[:, :, None, None], fc8.bias).mean(dim=(2, 3))


def reference(m, images, scales, mode, flip=True):
    out = []
    with torch.no_grad():
        for img in images:
            dense, crops = [], []
            for q in scales:
                x = _prep(m, img, q)
                H, W = x.shape[-2:]
                for v in [x, x.flip(-1)] if flip else [x]:
                    dense.append(F.softmax(_dense_scores(m, v), -1)[0])
                for i in range(5 if mode != "dense" else 0):
                    for j in range(5):
                        y0, x0 = int(i * (H - 224) / 4 + 0.5), int(j * (W - 224) / 4 + 0.5)
                        c = x[..., y0 : y0 + 224, x0 : x0 + 224]
                        for v in [c, c.flip(-1)] if flip else [c]:
                            crops.append(F.softmax(m(v), -1)[0])
            d = torch.stack(dense).mean(0)
            c = torch.stack(crops).mean(0) if crops else None
            out.append({"dense": d, "multicrop": c, "both": None if c is None else (d + c) / 2}[mode])
    return torch.stack(out).numpy()


@pytest.mark.parametrize("mode", ["dense", "multicrop", "both"])
def test_posteriors_match_plain_reference(tiny, images, mode):
    m = tiny("B" if mode == "dense" else "A", seed=3)
    imgs = images[:4] if mode == "dense" else images[:2]
    P = evaluate.posteriors(m, imgs, scales=(224, 256), mode=mode, progress=False)
    ref = reference(m, imgs, (224, 256), mode)
    assert P.shape == (len(imgs), 10)
    np.testing.assert_allclose(P, ref, atol=1e-5)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)


def test_no_flip_and_other_config(tiny, images):
    m = tiny("C", seed=4)
    P = evaluate.posteriors(m, images[:3], scales=(240,), flip=False, progress=False)
    np.testing.assert_allclose(P, reference(m, images[:3], (240,), "dense", flip=False), atol=1e-5)


def test_batch_size_and_order_invariance(tiny, images):
    m = tiny("A")
    a = evaluate.posteriors(m, images, scales=(224, 256), batch_size=1, progress=False)
    b = evaluate.posteriors(m, images[::-1], scales=(224, 256), batch_size=4, progress=False)
    c = evaluate.posteriors(m, images, scales=(224, 256), batch_size=3, num_workers=2, progress=False)
    np.testing.assert_allclose(a, b[::-1], atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_crop_grid_by_hand():
    assert crop_grid(256, 341) == [(y, x) for y in (0, 8, 16, 24, 32) for x in (0, 29, 59, 88, 117)]
    assert crop_grid(224, 224) == [(0, 0)] * 25
    with pytest.raises(ValueError, match="at least 224"):
        crop_grid(223, 300)


def test_fuse_and_topk_by_hand():
    p1 = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    p2 = np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(evaluate.fuse([p1, p2]), [[0.3, 0.45, 0.25], [0.15, 0.15, 0.7]])
    P = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    y = [1, 2, 1, 0]
    assert evaluate.topk_error(P, y, k=1) == 0.75  # only image 2 right (tie 0/1 -> class 0: wrong)
    assert evaluate.topk_error(P, y, k=2) == 0.25  # image 3: class 0 is third
    assert evaluate.topk_error(P, y, k=3) == 0.0
    with pytest.raises(ValueError):
        evaluate.fuse([p1, p2[:1]])


def test_scale_presets():
    assert evaluate.scales_for(256) == (224, 256, 288)
    assert evaluate.scales_for(384, multi=False) == (384,)
    assert evaluate.scales_for(jitter=(256, 512)) == (256, 384, 512)
    assert evaluate.scales_for(jitter=(256, 512), multi=False) == (384,)


def test_labels_from_imagefolder_and_hf(tmp_path):
    import datasets
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "1.png")
    imgs, y, names = evaluate.labels_of(tmp_path)
    assert names == ["cat", "dog"] and list(y) == [0, 1] and imgs[1].endswith("dog/1.png")
    ds = datasets.Dataset.from_dict({"label": [1, 0]}).cast_column(
        "label", datasets.ClassLabel(names=["a", "b"])
    )
    _, y, names = evaluate.labels_of(ds)
    assert list(y) == [1, 0] and names == ["a", "b"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(n, tmp_path):
    out = tmp_path / f"out{n}.npz"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(Path(__file__).parent / "_ranks.py"),
        str(out),
        str(tmp_path / f"cache{n}"),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(out)


def test_two_ranks_equal_one_process(tmp_path):
    one, two = run_ranks(1, tmp_path), run_ranks(2, tmp_path)
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    for key in ("P", "X", "cache"):
        assert one[key].shape == two[key].shape
        np.testing.assert_allclose(one[key], two[key], atol=1e-6)
