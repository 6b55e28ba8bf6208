"""Appendix-B extract against a plain per-image reference written here, plus several layers in
one pass, defaults, errors and the command line (the feature store: test_store.py; scikit-learn:
test_sklearn.py; Hugging Face datasets: test_hf.py)."""

import importlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import random_image, vggfeat_command
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

import vggfeat

extract_mod = importlib.import_module(
    "vggfeat.features.extract"
)  # the module; vggfeat.extract is the function


def plain_decode(path):
    """Independent decoding for the modes the test writes."""
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode == "I;16":
        arr = np.asarray(img).astype(np.float64) / 65535
        return np.repeat(np.round(arr * 255).astype(np.uint8)[..., None], 3, -1)
    if img.mode == "RGBA":
        a = np.asarray(img).astype(np.float64)
        rgb = a[..., :3] * a[..., 3:] / 255 + 255 * (1 - a[..., 3:] / 255)
        return np.round(rgb).astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def plain_map(m, x, layer):
    """The map at ``layer``: the trunk, then FC layers as convolutions (torchvision weights)."""
    if layer not in ("fc6", "fc7"):
        part, idx = m.layers[layer]
        return m.features[: idx + 1](x)
    f = m.features(x)
    fc6, fc7 = m.classifier[0], m.classifier[3]
    h = F.relu(F.conv2d(f, fc6.weight.view(fc6.out_features, f.shape[1], 7, 7), fc6.bias))
    return h if layer == "fc6" else F.relu(F.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))


def reference(m, arrays, scales, *, aggregate="mean", layer="fc7", flip=True):
    rows = []
    mean = torch.tensor(m.preprocess.mean).view(3, 1, 1)
    std = torch.tensor(m.preprocess.std).view(3, 1, 1)
    with torch.no_grad():
        for arr in arrays:
            per_scale = []
            for q in scales:
                x = TF.resize(torch.from_numpy(arr.copy()).permute(2, 0, 1), q, antialias=True).float() / 255
                x = ((x - mean) / std)[None]
                d = plain_map(m, x, layer).mean(dim=(2, 3))[0]
                if flip:
                    d = (d + plain_map(m, x.flip(-1), layer).mean(dim=(2, 3))[0]) / 2
                per_scale.append(d)
            s = torch.stack(per_scale)
            v = {"mean": s.mean(0), "max": s.max(0).values, "stack": s.flatten()}[aggregate]
            rows.append((v / v.norm()).numpy())
    return np.stack(rows)


@pytest.fixture
def files(tmp_path):
    """Mixed sizes, aspect ratios and modes, written to disk."""
    out = []
    specs = [
        ("rgb.jpg", "RGB", (240, 320)),
        ("gray.png", "L", (300, 200)),
        ("rgba.png", "RGBA", (256, 256)),
        ("pal.png", "P", (230, 310)),
        ("cmyk.jpg", "CMYK", (260, 240)),
        ("deep.png", "I;16", (240, 250)),
        ("rot.jpg", "EXIF", (240, 330)),
    ]
    for i, (name, mode, (h, w)) in enumerate(specs):
        img = random_image(h, w, seed=10 + i)
        p = tmp_path / "imgs" / name
        p.parent.mkdir(exist_ok=True)
        if mode == "RGBA":
            a = np.asarray(img)
            alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))[..., None]
            Image.fromarray(np.concatenate([a, alpha], -1), "RGBA").save(p)
        elif mode == "I;16":
            g = (np.asarray(img.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
            Image.fromarray(g).save(p)
        elif mode == "EXIF":
            exif = Image.Exif()
            exif[0x0112] = 8
            img.save(p, exif=exif, quality=95)
        elif mode == "P":
            img.convert("P", palette=Image.ADAPTIVE).save(p)
        else:
            img.convert(mode).save(p, quality=95) if p.suffix == ".jpg" else img.convert(mode).save(p)
        out.append(p)
    return out


@pytest.mark.parametrize(
    "aggregate,layer,flip",
    [
        ("mean", "fc7", True),
        ("stack", "fc7", False),
        ("max", "fc6", True),
        ("mean", "pool5", True),
        ("stack", "conv5_2", True),
    ],
)
def test_extract_matches_plain_reference(files, tiny, aggregate, layer, flip):
    m = tiny("D", seed=5)
    X = vggfeat.extract(
        files, model=m, scales=(224, 256), aggregate=aggregate, layer=layer, flip=flip, progress=False
    )
    ref = reference(
        m, [plain_decode(p) for p in files], (224, 256), aggregate=aggregate, layer=layer, flip=flip
    )
    assert X.dtype == np.float32 and X.shape == ref.shape
    np.testing.assert_allclose(X, ref, atol=1e-5)


@pytest.fixture
def passes(monkeypatch):
    """Counts the network passes: calls of the first and of the last conv of the trunk."""
    count = {"first": 0, "last": 0}

    def spy(m):
        convs = [c for c in m.features if isinstance(c, torch.nn.Conv2d)]
        for name, conv in (("first", convs[0]), ("last", convs[-1])):
            conv.register_forward_hook(lambda *_, name=name: count.__setitem__(name, count[name] + 1))
        return m

    return count, spy


@pytest.mark.parametrize("aggregate,flip", [("mean", True), ("stack", False)])
def test_several_layers_come_from_one_pass_each_as_its_own_call(files, tiny, passes, aggregate, flip):
    count, spy = passes
    m = spy(tiny("D", seed=3))
    layers = ("fc7", "pool5", "conv4_1", "fc6")  # any order, trunk and head layers
    kw = dict(model=m, scales=(224, 256), aggregate=aggregate, flip=flip, num_workers=0, progress=False)
    X = vggfeat.extract(files[:3], layer=layers, **kw)
    one_pass = dict(count)
    assert one_pass["first"] > 0 and one_pass["last"] == one_pass["first"]
    assert isinstance(X, dict) and list(X) == list(layers)
    for layer in layers:
        count.update(first=0, last=0)
        alone = vggfeat.extract(files[:3], layer=layer, **kw)
        assert count["first"] == one_pass["first"]  # each single-layer call is a full run too
        assert X[layer].dtype == np.float32 and X[layer].shape == alone.shape
        np.testing.assert_allclose(X[layer], alone, atol=1e-5)
    ref = reference(m, [plain_decode(p) for p in files[:3]], (224, 256), aggregate=aggregate, flip=flip)
    np.testing.assert_allclose(X["fc7"], ref, atol=1e-5)


def test_several_layers_of_fused_nets(files, tiny):
    d, e = tiny("D", seed=1), tiny("E", seed=2)
    kw = dict(scales=(224,), progress=False)
    X = vggfeat.extract(files[:2], model=(d, e), layer=("pool5", "fc7"), **kw)
    for layer in ("pool5", "fc7"):
        np.testing.assert_allclose(
            X[layer], vggfeat.extract(files[:2], model=(d, e), layer=layer, **kw), atol=1e-5
        )
    ext = vggfeat.Extractor((d, e), layer=("pool5", "fc7"), **kw)
    assert ext.widths == {"pool5": [32, 32], "fc7": [32, 32]} and ext.dim == 128
    with pytest.raises(ValueError, match="distinct names"):
        vggfeat.Extractor(d, layer=("fc7", "fc7"), **kw)
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        vggfeat.Extractor(d, layer=("fc7", "fc9"), **kw)


def test_inputs_of_every_kind_agree(files, tiny):
    import datasets

    m = tiny("A")
    arrays = [plain_decode(p) for p in files[:3]]
    kw = dict(model=m, scales=(224,), progress=False)
    a = vggfeat.extract(files[:3], **kw)
    b = vggfeat.extract(arrays, **kw)
    c = vggfeat.extract([torch.from_numpy(x.copy()).permute(2, 0, 1) for x in arrays], **kw)
    ds = datasets.Dataset.from_dict({"picture": [Image.fromarray(x) for x in arrays], "y": [0, 1, 2]})
    d = vggfeat.extract(ds.cast_column("picture", datasets.Image()), **kw)
    for other in (b, c, d):
        np.testing.assert_allclose(a, other, atol=1e-6)
    folder = vggfeat.extract(files[0].parent, **kw)  # a directory: recursive, sorted
    order = sorted(files)
    np.testing.assert_allclose(folder, vggfeat.extract(order, **kw), atol=1e-6)


def test_late_fusion_stacks_normalised_descriptors(files, tiny):
    d, e = tiny("D", seed=1), tiny("E", seed=2)
    kw = dict(scales=(224,), progress=False)
    X = vggfeat.extract(files[:3], model=(d, e), **kw)
    Xd, Xe = vggfeat.extract(files[:3], model=d, **kw), vggfeat.extract(files[:3], model=e, **kw)
    np.testing.assert_allclose(X, np.hstack([Xd, Xe]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)


def test_on_error_skip_and_raise(files, tiny, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    inputs = [files[0], bad, files[1]]
    m = tiny("A")
    with pytest.raises(vggfeat.errors.ImageError, match=r"#1.*bad.jpg"):
        vggfeat.extract(inputs, model=m, scales=(224,), progress=False)
    ext = vggfeat.Extractor(m, scales=(224,), on_error="skip", progress=False)
    with pytest.warns(UserWarning, match="bad.jpg"):
        X = ext(inputs)
    assert np.isnan(X[1]).all() and not np.isnan(X[[0, 2]]).any()
    assert ext.failures_[0][0] == 1 and "bad.jpg" in ext.failures_[0][1]
    good = vggfeat.extract([files[0], files[1]], model=m, scales=(224,), progress=False)
    np.testing.assert_allclose(X[[0, 2]], good, atol=1e-6)


def test_defaults_are_the_paper_net_with_imagenet_weights_at_the_paper_scales(tmp_path, monkeypatch):
    from torchvision.models import VGG16_Weights

    from vggfeat.features.sklearn import VGGFeatures

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "hub" / "checkpoints" / os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    with pytest.raises(vggfeat.WeightsError) as e:  # offline and not cached: says what to put where
        vggfeat.extract(np.zeros((256, 256, 3), np.uint8), progress=False)
    assert ckpt.name in str(e.value) and str(ckpt.parent) in str(e.value)
    # a stand-in for torchvision's file: every tensor a constant (stride-0 storage, a few bytes)
    with torch.device("meta"):  # torchvision's own key names and shapes, no memory
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    ckpt.parent.mkdir(parents=True)
    torch.save({k: torch.full((1,), i / 100).expand(s) for i, (k, s) in enumerate(shapes.items())}, ckpt)
    ext = vggfeat.Extractor(progress=False)
    (m,) = ext.models
    assert m.config == "D" and ext.scales == (256, 384, 512) and ext.layer == "fc7"
    for i, (k, v) in enumerate(m.state_dict().items()):
        assert torch.all(v == i / 100), k
    assert m.preprocess.mean == (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation
    params = VGGFeatures().get_params()
    assert params["model"] is None and params["weights"] == "default" and params["scales"] is None


def test_scales_default_to_the_paper_q_for_the_net_s_crop(tiny):
    ext = vggfeat.Extractor(tiny("A", crop=64), progress=False)
    assert ext.scales == (73, 110, 146)  # round(256 * 64 / 224), round(384 * 64 / 224), ...
    assert vggfeat.Extractor(tiny("A", crop=64), scales=(64, 96), progress=False).scales == (64, 96)


def test_configs_without_public_weights_say_what_to_pass():
    with pytest.raises(vggfeat.WeightsError, match=r"VGG-C.*weights=None"):
        vggfeat.Extractor("C", progress=False)


def test_random_weights_warn_once(monkeypatch, tiny, caplog):
    import warnings

    built = []
    monkeypatch.setattr(extract_mod, "vgg", lambda name, weights: built.append(weights) or tiny(name))
    img = np.zeros((224, 230, 3), np.uint8)
    with warnings.catch_warnings(record=True) as rec, caplog.at_level("WARNING", "vggfeat"):
        warnings.simplefilter("always")
        vggfeat.extract(img, model=("A", "B"), weights=None, scales=(224,), progress=False)
    said = [str(w.message) for w in rec if "untrained" in str(w.message)]
    assert len(said) == 1 and "VGG A, B" in said[0] and "weights='default'" in said[0]
    assert not [r for r in caplog.records if "untrained" in r.getMessage()]  # no logging copy (issue 30)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        vggfeat.extract(img, model="A", scales=(224,), progress=False)  # default: no warning
    assert not [w for w in rec if "untrained" in str(w.message)]
    assert built == [None, None, "default"]


def test_a_given_net_warns_when_its_record_says_its_weights_are_random(tiny, tmp_path):
    from vggfeat.features.sklearn import VGGFeatures

    img = np.zeros((224, 230, 3), np.uint8)
    net = tiny("A")  # built with weights=None: its pretrained_cfg has no source
    for call in (
        lambda: vggfeat.extract(img, model=net, scales=(224,), progress=False),
        lambda: VGGFeatures(model=net, scales=(224,), progress=False).fit_transform([img]),
    ):
        with pytest.warns(UserWarning, match=r"the given VGG-A come from an untrained.*pretrained_cfg"):
            call()
    loaded = vggfeat.vgg(weights=vggfeat.save_weights(net, tmp_path / "a.safetensors"))
    assert loaded.pretrained_cfg["source"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a net whose weights came from a file: no warning
        vggfeat.extract(img, model=loaded, scales=(224,), progress=False)


def test_weights_given_with_a_net_are_loaded_into_a_copy(tiny, tmp_path):
    net, other = tiny("A", seed=0), tiny("A", seed=1)
    file = vggfeat.save_weights(other, tmp_path / "other.safetensors")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    img = np.full((224, 224, 3), 90, np.uint8)
    X = vggfeat.extract(img, model=net, weights=file, scales=(224,), progress=False)
    for k, v in net.state_dict().items():  # the caller's net as it was
        assert torch.equal(v, before[k]), k
    assert net.pretrained_cfg["source"] is None
    np.testing.assert_allclose(X, vggfeat.extract(img, model=other, scales=(224,), progress=False), atol=1e-6)


def test_a_weights_file_builds_the_net_it_records_unless_a_model_is_named(tiny, tmp_path):
    from vggfeat.features.sklearn import VGGFeatures

    a = tiny("A")
    img = np.full((224, 224, 3), 90, np.uint8)
    want = vggfeat.extract(img, model=a, scales=(224,), progress=False)
    for path in (tmp_path / "a.pth", tmp_path / "a.safetensors"):
        torch.save(a.state_dict(), path) if path.suffix == ".pth" else vggfeat.save_weights(a, path)
        ext = vggfeat.Extractor(weights=str(path), scales=(224,), progress=False)
        assert ext.models[0].config == "A"
        np.testing.assert_allclose(ext(img), want, atol=1e-6)
        np.testing.assert_allclose(
            vggfeat.extract([img], weights=path, scales=(224,), progress=False), want, atol=1e-6
        )
        got = VGGFeatures(weights=str(path), scales=(224,), progress=False).fit_transform([img])
        np.testing.assert_allclose(got, want, atol=1e-6)
        with pytest.raises(
            vggfeat.WeightsError, match=r"for VGG-A, not VGG-D; pass model='A' or leave model out"
        ):
            vggfeat.extract([img], model="D", weights=path, progress=False)


def test_numpy_collections_are_split_into_images_as_lists_are(files, tiny):
    from vggfeat.features.sklearn import VGGFeatures

    m = tiny("A")
    kw = dict(model=m, scales=(224,), progress=False)
    paths = [str(p) for p in files[:3]]
    want = vggfeat.extract(paths, **kw)
    np.testing.assert_allclose(vggfeat.extract(np.array(paths), **kw), want, atol=1e-6)
    np.testing.assert_allclose(vggfeat.extract(np.array(paths, dtype=object), **kw), want, atol=1e-6)
    vf = VGGFeatures(**kw).fit()
    np.testing.assert_allclose(vf.transform(np.array(paths)), want, atol=1e-6)  # train_test_split's output
    batch = np.stack([np.asarray(random_image(230, 250, seed=s)) for s in range(3)])
    np.testing.assert_allclose(vggfeat.extract(batch, **kw), vggfeat.extract(list(batch), **kw), atol=1e-6)
    np.testing.assert_allclose(
        vggfeat.extract(batch, **kw),
        vggfeat.extract(torch.from_numpy(batch).permute(0, 3, 1, 2), **kw),
        atol=1e-6,
    )
    with pytest.raises(vggfeat.errors.ImageError) as e:
        vggfeat.extract([np.zeros((5, 5, 7), np.uint8)], **kw)
    assert str(e.value).count("image #0") == 1


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 7.0, -0.5])
def test_float_pixels_outside_0_1_are_errors_naming_the_image_not_black_or_white(tiny, value):
    m = tiny("A")
    kw = dict(model=m, scales=(224,), progress=False)
    good = np.random.default_rng(0).random((224, 230, 3)).astype(np.float32)
    bad = good.copy()
    bad[3, 4, 1] = value
    with pytest.raises(
        vggfeat.errors.ImageError, match=r"image #1: .*(NaN or infinite|range over).*\[0, 1\]"
    ):
        vggfeat.extract([good, bad], **kw)
    with pytest.raises(vggfeat.errors.ImageError, match=r"image #0"):  # tensors too
        vggfeat.extract([torch.from_numpy(bad).permute(2, 0, 1)], **kw)
    with pytest.warns(UserWarning, match="could not be read"):
        X = vggfeat.extract([good, bad], on_error="skip", **kw)
    assert np.isnan(X[1]).all()
    np.testing.assert_allclose(X[0], vggfeat.extract([good], **kw)[0], atol=1e-6)
    edge = np.clip(good + 0.4 / 255, 0, 1 + 0.4 / 255)  # within half a level: rounds as before
    np.testing.assert_allclose(
        vggfeat.extract([edge], **kw), vggfeat.extract([np.clip(edge, 0, 1)], **kw), atol=1e-6
    )


def test_cli_extract_writes_features_and_sidecar(files, tiny, tmp_path):
    m = tiny("A")
    w = vggfeat.save_weights(m, tmp_path / "a.safetensors")
    out = tmp_path / "out" / "feats.npy"
    r = vggfeat_command(
        "extract", files[0].parent, "--out", out, "--weights", w, "--scales", "224", "256",
        "--aggregate", "stack", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    X = np.load(out)
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["rows"] == [str(p) for p in sorted(files)] and side["scales"] == [224, 256]
    assert side["models"][0]["fingerprint"] == vggfeat.fingerprint(m)
    np.testing.assert_allclose(
        X,
        vggfeat.extract(sorted(files), model=m, scales=(224, 256), aggregate="stack", progress=False),
        atol=1e-6,
    )
    r = vggfeat_command("extract", files[0], "--out", out, "--weights", tmp_path / "missing.pth")
    assert r.returncode == 2 and "missing.pth" in r.stderr and "Traceback" not in r.stderr


def test_benchmark_scripts_build_what_weights_files_hold_and_name_their_own_flag(tiny, tmp_path):
    from conftest import REPO, script

    path = tmp_path / "a.pth"
    torch.save(tiny("A").state_dict(), path)
    voc = script("voc_svm")
    args = voc.get_args_parser().parse_args(["--root", str(tmp_path), "--weights", str(path)])
    cfg = voc.config_from_args(args)
    (net,) = cfg.build_nets()
    assert net.config == "A" and cfg.out.name == "voc2007_a"  # named after the file, not "None"
    cmd = [sys.executable, str(REPO / "benchmarks" / "voc_svm.py"), "--root", str(tmp_path)]
    r = subprocess.run([*cmd, "--model", "D", "--weights", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and "for VGG-A, not VGG-D; pass --model A or leave --model out" in r.stderr
    assert "config=" not in r.stderr and "Traceback" not in r.stderr
