"""Sec. 3.2 evaluation against a plain per-image reference written here (no engine code)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image, torchrun, vggfeat_command
from torchvision.transforms.v2 import functional as TF

from vggfeat import evaluate
from vggfeat.errors import ImageError
from vggfeat.features.dense import crop_grid


def _prep(m, img, q, antialias=True):
    """Resize (smallest side q) and normalise, written out by hand from the stated mean/std."""
    x = TF.pil_to_tensor(img)
    x = TF.resize(x, q, antialias=antialias).float() / 255
    mean = torch.tensor(m.preprocess.mean).view(3, 1, 1)
    std = torch.tensor(m.preprocess.std).view(3, 1, 1)
    return ((x - mean) / std)[None]


def _dense_scores(m, x):
    """FC layers as convolutions by reshaping the torchvision-layout weights -> (1, K, h, w)."""
    f = m.features(x)
    fc6, fc7, fc8 = m.classifier[0], m.classifier[3], m.classifier[6]
    k = m.kernel  # fc6 covers the pool5 map of the training crop: 7x7 at 224
    h = F.relu(F.conv2d(f, fc6.weight.view(fc6.out_features, f.shape[1], k, k), fc6.bias))
    h = F.relu(F.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))
    return F.conv2d(h, fc8.weight[:, :, None, None], fc8.bias)


def _grid(H, W, c, n=5, rounding=lambda v: int(v + 0.5)):
    """Top-left corners of an n x n grid of c x c crops, corners of the image included."""
    return [
        (rounding(i * (H - c) / (n - 1)), rounding(j * (W - c) / (n - 1))) for i in range(n) for j in range(n)
    ]


def reference(m, images, scales, mode, flip=True, **slip):
    """Sec. 3.2 per image, one view at a time. ``slip`` makes one deliberate protocol mistake:
    ``softmax_last`` (average class scores, softmax once), ``no_flip_average`` (the flipped
    views are computed but ignored), ``max_pool`` (the score map max-pooled, not averaged),
    ``no_antialias`` (resize without antialiasing), ``grid`` (another crop grid: ``"4x4"`` or
    ``"floor"`` rounding), ``pooled_both`` (both = the mean over all views, not the mean of
    the dense and multi-crop means)."""
    post = (lambda s: s) if slip.get("softmax_last") else (lambda s: F.softmax(s, -1))
    pool = (lambda s: s.amax(dim=(2, 3))) if slip.get("max_pool") else (lambda s: s.mean(dim=(2, 3)))
    grid = {
        None: _grid,
        "4x4": lambda H, W, c: _grid(H, W, c, n=4),
        "floor": lambda H, W, c: _grid(H, W, c, rounding=int),
    }
    views_of = lambda x: [x, x.flip(-1)][: 1 if slip.get("no_flip_average") or not flip else 2]
    out = []
    with torch.no_grad():
        for img in images:
            dense, crops = [], []
            for q in scales:
                x = _prep(m, img, q, antialias=not slip.get("no_antialias"))
                dense += [post(pool(_dense_scores(m, v)))[0] for v in views_of(x)]
                for y0, x0 in grid[slip.get("grid")](*x.shape[-2:], m.crop) if mode != "dense" else []:
                    c = x[..., y0 : y0 + m.crop, x0 : x0 + m.crop]
                    crops += [post(m(v))[0] for v in views_of(c)]
            last = (lambda s: F.softmax(s, -1)) if slip.get("softmax_last") else (lambda s: s)
            d = last(torch.stack(dense).mean(0))
            c = last(torch.stack(crops).mean(0)) if crops else None
            if slip.get("pooled_both") and crops:
                both = last(torch.stack(dense + crops).mean(0))
            else:
                both = None if c is None else (d + c) / 2
            out.append({"dense": d, "multicrop": c, "both": both}[mode])
    return torch.stack(out).numpy()


def sharpened(m, images, spread=4.0):
    """``m`` with fc8 scaled so the class scores of the first image spread over about
    ``spread`` (std across classes): a tiny random net's scores are nearly uniform, under
    which softmax-then-average and average-then-softmax agree to 1e-6 and a slip would pass."""
    with torch.no_grad():
        s = _dense_scores(m, _prep(m, images[0], 256)).mean(dim=(2, 3))[0]
        m.classifier[6].weight.mul_(spread / (s - m.classifier[6].bias).std())
    return m


TOL = 1e-5
# deliberate protocol slips (see ``reference``), each of which must be caught at TOL
SLIPS = {
    "dense": [{"softmax_last": True}, {"no_flip_average": True}, {"max_pool": True}, {"no_antialias": True}],
    "multicrop": [
        {"softmax_last": True},
        {"no_flip_average": True},
        {"no_antialias": True},
        {"grid": "4x4"},
        {"grid": "floor"},
    ],
    "both": [{"pooled_both": True}],
}


@pytest.mark.parametrize("mode", ["dense", "multicrop", "both"])
def test_posteriors_match_plain_reference_and_slips_fail(tiny, images, mode):
    imgs = images[:4] if mode == "dense" else images[:2]
    m = sharpened(tiny("B" if mode == "dense" else "A", seed=3), imgs)
    P = evaluate.posteriors(m, imgs, scales=(224, 256), mode=mode, progress=False)
    assert P.shape == (len(imgs), 10) and P.max(1).min() > 0.5  # sharp class scores
    np.testing.assert_allclose(P, reference(m, imgs, (224, 256), mode), atol=TOL)
    np.testing.assert_allclose(P.sum(1), 1, atol=TOL)
    for slip in SLIPS[mode]:
        wrong = reference(m, imgs, (224, 256), mode, **slip)
        assert np.abs(P - wrong).max() > 10 * TOL, f"the slip {slip} would pass unnoticed"


def test_nearly_uniform_scores_hide_a_slip(tiny, images):
    """Why the nets above are sharpened: unscaled, softmax-then-average and average-then-softmax
    agree within the tolerance."""
    m = tiny("B", seed=3)
    P = evaluate.posteriors(m, images[:2], scales=(224, 256), progress=False)
    wrong = reference(m, images[:2], (224, 256), "dense", softmax_last=True)
    assert np.abs(P - wrong).max() < TOL


def test_no_flip_and_other_config(tiny, images):
    m = sharpened(tiny("C", seed=4), images)
    P = evaluate.posteriors(m, images[:3], scales=(240,), flip=False, progress=False)
    np.testing.assert_allclose(P, reference(m, images[:3], (240,), "dense", flip=False), atol=TOL)
    assert np.abs(P - reference(m, images[:3], (240,), "dense")).max() > 10 * TOL


def test_multicrop_of_a_small_crop_net(tiny, images):
    """A net trained on 64-pixel crops takes 64-pixel crops (5x5 grid) at its own small scales."""
    m = sharpened(tiny("A", seed=5, crop=64), images)
    P = evaluate.posteriors(m, images[:2], scales=(64, 80), mode="both", progress=False)
    np.testing.assert_allclose(P, reference(m, images[:2], (64, 80), "both"), atol=TOL)


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


def test_topk_error_leaves_out_nan_rows():
    """A NaN row (an image skipped as unreadable) has no prediction: a stable argsort would rank
    its NaNs and count it correct for low labels, so it is left out, with a warning."""
    nan = [np.nan] * 3
    P = np.array([[0.5, 0.3, 0.2], nan, [0.1, 0.2, 0.7], nan])
    y = [1, 0, 2, 0]
    with pytest.warns(RuntimeWarning, match="leaves out 2 of 4 rows"):
        assert evaluate.topk_error(P, y, k=1) == 0.5  # image 0 wrong, image 2 right
    with pytest.warns(RuntimeWarning):
        assert evaluate.topk_error(P, y, k=2) == 0.0
    with pytest.raises(ValueError, match="all 2 rows of P are NaN"):
        evaluate.topk_error(np.full((2, 3), np.nan), [0, 1])


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


def _state(m):
    """Everything of ``m`` a caller could notice: tensors (storage, device, dtype, layout),
    gradients and each module's train/eval mode."""
    grad = lambda p: None if p.grad is None else (p.grad.data_ptr(), p.grad.device)
    return (
        [(p.data_ptr(), p.device, p.dtype, p.is_contiguous(), grad(p)) for p in m.parameters()],
        [(b.data_ptr(), b.is_contiguous()) for b in m.buffers()],
        [mod.training for mod in m.modules()],
    )


@pytest.mark.parametrize("mode", ["dense", "multicrop"])
def test_model_left_as_found(tiny, images, tmp_path, mode):
    m = tiny("A", batch_norm=True).train()
    m.features[1].eval()  # a caller's frozen BatchNorm in a net being trained stays frozen
    m.classifier[0].weight.grad = torch.ones_like(m.classifier[0].weight)
    before = _state(m)
    assert all(p.is_contiguous() for p in m.parameters())  # NCHW
    evaluate.posteriors(m, images[:2], scales=(224,), mode=mode, progress=False)
    assert _state(m) == before
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError):  # also when the run stops on an error
        evaluate.posteriors(m, [images[0], bad], scales=(224,), mode=mode, progress=False)
    assert _state(m) == before


def test_half_precision_model_runs_and_stays_half(tiny, images):
    m = tiny("A")
    ref = evaluate.posteriors(m, images[:1], scales=(224,), progress=False)
    m.bfloat16()
    P = evaluate.posteriors(m, images[:1], scales=(224,), progress=False)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    np.testing.assert_allclose(P, ref, atol=2e-2)


def run_ranks(n, tmp_path):
    out = tmp_path / f"out{n}.npz"
    r = torchrun(n, Path(__file__).parent / "_ranks.py", out, tmp_path / f"cache{n}")
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(out)


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path):
    one, two = run_ranks(1, tmp_path), run_ranks(2, tmp_path)
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    for key in ("P", "X", "cache"):
        assert one[key].shape == two[key].shape
        np.testing.assert_allclose(one[key], two[key], atol=1e-6)


# -- vggfeat evaluate on ImageNet's val/ as distributed -----------------------------------------

WNIDS = ["n01440764", "n01751748", "n02100735", "n02119789"]  # sorted: the nets' class order
TRUTH = ["n02119789", "n01440764", "n01751748", "n02119789", "n02100735", "n01440764"]


def _flat_val(root: Path) -> Path:
    from conftest import random_image

    val = root / "val"
    val.mkdir(parents=True)
    for k in range(1, len(TRUTH) + 1):
        random_image(230, 250 + 4 * k, seed=k).save(val / f"ILSVRC2012_val_{k:08d}.JPEG")
    rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 30 40" for k, w in enumerate(TRUTH, start=1)]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return val


@pytest.mark.slow
def test_evaluate_command_reads_a_flat_val_with_kaggles_labels(tiny, tmp_path):
    import vggfeat

    val = _flat_val(tmp_path)
    m = tiny("A", num_classes=4)
    w = vggfeat.save_weights(m, tmp_path / "a.safetensors")
    r = vggfeat_command("evaluate", val, "--weights", w, "--scales", "224", "--no-flip", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted(val.iterdir())
    P = evaluate.posteriors(m, files, scales=(224,), flip=False, progress=False)
    y = [WNIDS.index(t) for t in TRUTH]  # by hand: the sorted wnid order
    assert f"top-1 error {100 * evaluate.topk_error(P, y, 1):.2f}%" in r.stdout and "(6 images)" in r.stdout
    # without labels: the trainer's one line naming the label files, not torchvision's message
    (tmp_path / "LOC_val_solution.csv").unlink()
    r = vggfeat_command("evaluate", val, "--weights", w, "--scales", "224", cwd=tmp_path)
    assert (
        r.returncode == 2 and "--val-labels LOC_val_solution.csv" in r.stderr and "Traceback" not in r.stderr
    )


@pytest.mark.slow
def test_a_tree_with_fewer_classes_than_outputs_is_mapped_by_name_or_refused(tiny, tmp_path):
    from conftest import random_image

    import vggfeat

    val = tmp_path / "val"
    for c in ("n01751748", "n02119789"):  # 2 of the net's 4 classes
        (val / c).mkdir(parents=True)
        random_image(230, 250, seed=len(c)).save(val / c / "0.png")
    m = tiny("A", num_classes=4)
    plain = vggfeat.save_weights(m, tmp_path / "plain.safetensors")
    r = vggfeat_command("evaluate", val, "--weights", plain, "--scales", "224", cwd=tmp_path)
    assert r.returncode == 2 and "2 classes" in r.stderr and "4 outputs" in r.stderr, r.stderr
    named = vggfeat.save_weights(m, tmp_path / "named.safetensors", class_names=WNIDS)
    images, labels, classes = evaluate.labels_of(val)
    assert list(evaluate.net_labels(labels, classes, vggfeat.vgg(weights=str(named)))) == [1, 3]  # by wnid
    r = vggfeat_command("evaluate", val, "--weights", named, "--scales", "224", "--no-flip", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    P = evaluate.posteriors(m, images, scales=(224,), flip=False, progress=False)
    assert f"top-1 error {100 * evaluate.topk_error(P, [1, 3], 1):.2f}%" in r.stdout


@pytest.mark.slow
def test_run_protocols_runs_each_engine_once_and_equals_each_protocol_alone(tmp_path, tiny, monkeypatch):
    """Tables 3-6 from one dense and one multi-crop pass per net: every row and posterior equals
    the protocol computed on its own by posteriors + topk_error."""
    images = []
    for i, (h, w) in enumerate([(230, 250), (250, 230), (240, 240)]):
        random_image(h, w, seed=i).save(tmp_path / f"{i}.png")
        images.append(tmp_path / f"{i}.png")
    labels = np.array([0, 1, 0])
    nets = {"D": tiny("D", seed=1, num_classes=2), "E": tiny("E", seed=2, num_classes=2)}
    runs, real = [], evaluate.posteriors

    def spy(model, images, **kw):
        runs.append((next(n for n, m in nets.items() if m is model), kw["mode"]))
        return real(model, images, **kw)

    monkeypatch.setattr(evaluate, "posteriors", spy)
    rows, P = evaluate.run_protocols(
        nets, images, labels, protocols=evaluate.PROTOCOLS, jitter=(224, 256), progress=False
    )
    monkeypatch.setattr(evaluate, "posteriors", real)
    assert runs == [("D", "dense"), ("D", "multicrop"), ("E", "dense"), ("E", "multicrop")]

    q = (224, 240, 256)
    alone = {
        (n, proto): real(m, images, scales=qs, mode=mode, progress=False)
        for n, m in nets.items()
        for proto, qs, mode in (
            ("single", (240,), "dense"),
            ("multi", q, "dense"),
            ("multicrop", q, "multicrop"),
            ("both", q, "both"),
        )
    }
    alone["D&E", "fusion"] = evaluate.fuse([alone["D", "both"], alone["E", "both"]])
    assert set(P) == set(alone)
    for key, ref in alone.items():
        np.testing.assert_allclose(P[key], ref, rtol=1e-6, atol=1e-7, err_msg=str(key))
    assert not np.allclose(P["D", "both"], P["D", "multi"])  # "both" is not one of its parts
    got = {(r["model"], r["protocol"]): r for r in rows}
    assert list(got) == [*[(n, p) for n in nets for p in evaluate.PROTOCOLS[:4]], ("D&E", "fusion")]
    for (n, proto), ref in alone.items():
        r = got[n, proto]
        assert (r["top1"], r["top5"]) == (
            100 * evaluate.topk_error(ref, labels, 1),
            100 * evaluate.topk_error(ref, labels, 5),
        )
        assert r["scales"] == ([240] if proto == "single" else list(q))
    assert (
        got["D", "both"]["seconds_per_image"]
        == got["D", "multi"]["seconds_per_image"] + got["D", "multicrop"]["seconds_per_image"]
    )
    assert got["D", "single"]["seconds_per_image"] == got["D", "multi"]["seconds_per_image"]  # one pass


def test_run_protocols_single_alone_runs_its_one_q(tiny, images, monkeypatch):
    runs, real = [], evaluate.posteriors
    monkeypatch.setattr(
        evaluate, "posteriors", lambda m, x, **kw: runs.append(kw["scales"]) or real(m, x, **kw)
    )
    model = tiny(num_classes=3)
    rows, P = evaluate.run_protocols(
        {"D": model}, images, [0] * len(images), protocols=("single",), progress=False
    )
    assert runs == [(384,)] and rows[0]["scales"] == [384]
    np.testing.assert_allclose(
        P["D", "single"], real(model, images, scales=(384,), progress=False), atol=1e-7
    )


def test_run_protocols_refuses_unknown_protocols_and_a_bad_single_q(tiny, images):
    with pytest.raises(ValueError, match="unknown \\['Multi'\\]"):
        evaluate.run_protocols({"D": tiny()}, images, [0] * len(images), protocols=("Multi",))
    with pytest.raises(ValueError, match="single Q 300 must be one of"):
        evaluate.run_protocols({"D": tiny()}, images, [0] * len(images), scales={"D": ((256, 384), 300)})
