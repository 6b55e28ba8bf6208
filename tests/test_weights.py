"""Weights I/O: torchvision checkpoints unchanged, our safetensors with metadata, clear errors."""

import os

import numpy as np
import pytest
import torch
import torchvision
from conftest import vggfeat_command
from PIL import Image
from torchvision.models import VGG11_Weights, VGG16_Weights

import vggfeat
from vggfeat import Preprocess, WeightsError


def test_torchvision_weights_offline_and_not_cached_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as e:
        vggfeat.vgg("D", weights="torchvision")
    msg = str(e.value)
    assert os.path.basename(VGG16_Weights.IMAGENET1K_V1.url) in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg


def test_torchvision_weights_from_cache_with_their_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    tv = torchvision.models.vgg11().eval()
    ckpt = tmp_path / "hub" / "checkpoints" / os.path.basename(VGG11_Weights.IMAGENET1K_V1.url)
    ckpt.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), ckpt)
    m = vggfeat.vgg("A", weights="torchvision").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), tv(x))
    # torchvision's ImageClassification defaults, read independently here
    assert m.preprocess.mean == (0.485, 0.456, 0.406) and m.preprocess.std == (0.229, 0.224, 0.225)
    assert m.meta["categories"][0] == "tench"


def test_imagenet1k_features_keeps_its_own_normalisation():
    p = Preprocess.from_torchvision(VGG16_Weights.IMAGENET1K_FEATURES)
    assert p.mean == (0.48235, 0.45882, 0.40784)
    assert p.std == pytest.approx((1 / 255,) * 3)
    x = torch.full((1, 3, 2, 2), 0.5)
    assert torch.allclose(p.apply(x)[0, :, 0, 0], (0.5 - torch.tensor(p.mean)) * 255, atol=1e-4)


def test_no_torchvision_weights_for_c():
    with pytest.raises(WeightsError, match="torchvision has no weights for VGG-C"):
        vggfeat.vgg("C", weights="torchvision")


def test_bare_state_dict_file_infers_architecture(tmp_path, tiny):
    m = tiny("E", batch_norm=True)
    p = tmp_path / "e.pth"
    torch.save(m.state_dict(), p)
    m2 = vggfeat.vgg(None, weights=p).eval()
    assert m2.arch == m.arch and m2.preprocess == Preprocess.imagenet()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    with pytest.raises(WeightsError, match="are for VGG-E, not VGG-D"):
        vggfeat.vgg("D", weights=p)


def test_save_weights_round_trip_with_metadata(tmp_path, tiny):
    m = tiny("C", num_classes=3)
    m.preprocess = Preprocess.mean_rgb((0.5, 0.4, 0.3))
    p = vggfeat.save_weights(m, tmp_path / "c.safetensors", class_names=["a", "b", "c"], provenance="test")
    m2 = vggfeat.vgg(weights=p, config=None).eval()
    assert m2.config == "C" and m2.arch == m.arch
    assert m2.preprocess == m.preprocess and m2.meta["class_names"] == ["a", "b", "c"]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert vggfeat.fingerprint(m) == vggfeat.fingerprint(m2)
    m2.classifier[6].bias.data += 1
    assert vggfeat.fingerprint(m) != vggfeat.fingerprint(m2)


def test_our_file_loads_into_torchvision(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    m = vggfeat.vgg("B").eval()
    p = vggfeat.save_weights(m, tmp_path / "b.safetensors")
    tv = torchvision.models.vgg13().eval()
    tv.load_state_dict(load_file(p), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tv(x), m(x))


def test_corrupt_truncated_and_mismatched_files(tmp_path, tiny):
    m = tiny("D")
    good = vggfeat.save_weights(m, tmp_path / "d.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        vggfeat.vgg(None, weights=cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pth"):
        vggfeat.vgg("D", weights=junk)
    with pytest.raises(WeightsError, match="does not exist"):
        vggfeat.vgg("D", weights=tmp_path / "missing.pth")
    # right config, wrong widths: the error names the keys and both shapes
    with pytest.raises(WeightsError, match=r"features.0.weight: file \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        vggfeat.load_weights(tiny("D", width=1 / 8), good)
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="layout"):
        vggfeat.vgg(None, weights=other)


def test_preprocess_apply_by_hand():
    x = torch.rand(1, 3, 4, 5)
    caffe = Preprocess.caffe().apply(x)
    bgr = x[:, [2, 1, 0]] * 255
    ref = bgr - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(caffe, ref, atol=1e-4)
    imnet = Preprocess.imagenet().apply(x)
    ref = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    assert torch.allclose(imnet, ref, atol=1e-6)


# --- no silent overrides (the weights say what the net is) -----------------------------------


def fake_torchvision_cache(tmp_path, monkeypatch, name="vgg16", seed=0):
    """torchvision's cache holding a random-init checkpoint under the real file name, offline."""
    from torchvision.models import get_model_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(seed)
    tv = getattr(torchvision.models, name)().eval()
    url = get_model_weights(name).IMAGENET1K_V1.url
    ckpt = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tv.state_dict(), ckpt)
    return tv


# full-size torchvision files (5-10 s each on 2 cores): a letter, a torchvision name, a weights
# name and an enum in the quick run; the other spellings with the slow tests
@pytest.mark.parametrize(
    ("name", "tv_name", "kw"),
    [
        ("D", "vgg16", dict(weights="default")),
        pytest.param("vgg16", "vgg16", dict(weights="default"), marks=pytest.mark.slow),
        ("vgg19_bn", "vgg19_bn", dict(weights="default")),
        pytest.param("E", "vgg19_bn", dict(weights="default", batch_norm=True), marks=pytest.mark.slow),
        pytest.param(None, "vgg16", dict(weights="IMAGENET1K_V1"), marks=pytest.mark.slow),
        ("A", "vgg11", dict(weights="IMAGENET1K_V1")),
        (None, "vgg13", dict(weights="enum")),
    ],
)
def test_names_users_type_load_torchvisions_file(tmp_path, monkeypatch, name, tv_name, kw):
    tv = fake_torchvision_cache(tmp_path, monkeypatch, tv_name)
    if kw["weights"] == "enum":
        from torchvision.models import VGG13_Weights

        kw = dict(weights=VGG13_Weights.IMAGENET1K_V1)
    m = vggfeat.vgg(name, **kw).eval()
    assert m.meta["provenance"].startswith("torchvision") and m.meta["categories"][0] == "tench"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), tv(x))


@pytest.mark.parametrize("config", ["A-LRN", "C", "B-5x5"])
def test_default_weights_for_configs_without_public_weights_say_what_to_do(config):
    with pytest.raises(WeightsError, match=rf"VGG-{config}.*no public ImageNet weights.*weights=None"):
        vggfeat.vgg(config, weights="default")


def test_name_and_batch_norm_must_agree():
    with pytest.raises(ValueError, match="batch_norm"):
        vggfeat.vgg("vgg16_bn", batch_norm=False)
    assert vggfeat.vgg("vgg11_bn", width=1 / 16, fc_dim=8).arch["batch_norm"] is True


def test_num_classes_keeps_every_layer_but_fc8(tmp_path, monkeypatch, caplog):
    tv = fake_torchvision_cache(tmp_path, monkeypatch, "vgg16")
    with caplog.at_level("INFO", logger="vggfeat"):
        m = vggfeat.vgg("D", weights="torchvision", num_classes=20)
    assert m.num_classes == 20 and m.arch["num_classes"] == 20
    assert m.classifier[6].weight.shape == (20, 4096) and torch.all(m.classifier[6].bias == 0)
    own, ref = m.state_dict(), tv.state_dict()
    for k in ref:
        if not k.startswith("classifier.6."):
            assert torch.equal(own[k], ref[k]), k
    assert "categories" not in m.meta  # the ImageNet names no longer describe the outputs
    assert sum("fc8 re-initialised for 20 classes" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        (dict(width=1 / 8), "width=0.0625"),
        (dict(fc_dim=64), "fc_dim=32"),
        (dict(batch_norm=True), "batch_norm=False"),
        (dict(crop=64), "crop=224"),
    ],
)
def test_arguments_that_contradict_the_file_are_errors(tmp_path, tiny, kw, named):
    p = vggfeat.save_weights(tiny("D"), tmp_path / "d.safetensors")
    (key,) = kw
    with pytest.raises(WeightsError, match=rf"{named}.*{key}={kw[key]!r}"):
        vggfeat.vgg("D", weights=p, **kw)
    torch.save(tiny("D").state_dict(), tmp_path / "d.pth")  # bare state dict: read off the shapes
    with pytest.raises(WeightsError, match=rf"{named}.*{key}={kw[key]!r}"):
        vggfeat.vgg("D", weights=tmp_path / "d.pth", **kw)
    # agreeing values are fine
    assert vggfeat.vgg("D", weights=p, width=1 / 16, fc_dim=32, crop=224).arch == tiny("D").arch


@pytest.mark.parametrize("config", ["A", "C", "E"])
@pytest.mark.parametrize("width", [0.1, 0.3, 0.25])
def test_bare_pth_of_narrow_nets_reloads(tmp_path, config, width):
    torch.manual_seed(0)
    m = vggfeat.vgg(config, width=width, fc_dim=16, num_classes=5).eval()
    torch.save(m.state_dict(), tmp_path / "n.pth")
    for w in (None, width):  # inferred, or passed by the caller
        m2 = vggfeat.vgg(config, weights=tmp_path / "n.pth", width=w).eval()
        assert m2.arch == m.arch
        assert all(a.shape == b.shape for a, b in zip(m.parameters(), m2.parameters()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_half_precision_files_load_as_float32_and_run(tmp_path, tiny, dtype, suffix):
    from safetensors.torch import save_file

    m = tiny("A")
    half = {k: v.to(dtype) if v.dtype.is_floating_point else v for k, v in m.state_dict().items()}
    path = tmp_path / f"h{suffix}"
    save_file(half, str(path)) if suffix == ".safetensors" else torch.save(half, path)
    m2 = vggfeat.vgg(None, weights=path).eval()
    assert all(p.dtype == torch.float32 for p in m2.parameters())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = vggfeat.vgg("A", weights={k: v.float() for k, v in half.items()}).eval()(x)
        assert torch.equal(m2(x), ref)
    # loading into an existing float32 model casts too
    m3 = vggfeat.load_weights(tiny("A", seed=1), path)
    assert all(p.dtype == torch.float32 for p in m3.parameters())


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module."])
def test_compiled_or_ddp_state_dicts_load(tmp_path, tiny, prefix):
    m = tiny("B")
    torch.save({prefix + k: v for k, v in m.state_dict().items()}, tmp_path / "c.pth")
    m2 = vggfeat.vgg(None, weights=tmp_path / "c.pth")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def _timm_vgg_a(num_classes: int):
    """timm's own VGG class at Table 1's A, channels / 16 (its head stays 4096 wide)."""
    from timm.models.vgg import VGG as TimmVGG

    torch.manual_seed(0)
    cfg = [4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]
    return TimmVGG(cfg, num_classes=num_classes).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_headless_checkpoints_of_timm_and_of_our_own_load(tmp_path, tiny, suffix):
    from safetensors.torch import save_file

    def write(sd, name):
        path = tmp_path / f"{name}{suffix}"
        torch.save(sd, path) if suffix == ".pth" else save_file(
            {k: v.contiguous() for k, v in sd.items()}, path
        )
        return path

    timm_net = _timm_vgg_a(num_classes=0)
    assert not [k for k in timm_net.state_dict() if k.startswith("head.")]
    m = vggfeat.vgg(weights=write(timm_net.state_dict(), "timm")).eval()
    assert m.config == "A" and m.num_classes == 0 and m.arch["fc_dim"] == 4096
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():  # timm's headless forward: the pooled post-ReLU fc7
        torch.testing.assert_close(m(x), timm_net(x), rtol=1e-4, atol=1e-5)
    ours = tiny("A", num_classes=0)
    back = vggfeat.vgg(weights=write(ours.state_dict(), "ours")).eval()
    assert back.arch == ours.arch
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in ours.state_dict().items())


def test_a_state_dict_of_no_layout_says_which_were_tried_and_what_it_holds(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(
        {
            "conv1.weight": torch.zeros(4, 3, 7, 7),
            "fc.weight": torch.zeros(10, 4),
            "fc.bias": torch.zeros(10),
        },
        path,
    )
    with pytest.raises(WeightsError) as e:
        vggfeat.vgg(None, weights=path)
    said = str(e.value)
    assert "torchvision's VGG" in said and "timm's VGG" in said and "num_classes=0" in said
    assert "holds 3 tensors: conv1.* (1 tensor), fc.* (2 tensors)" in said


@pytest.fixture
def not_weights(tmp_path):
    """Files users pass as weights by mistake: a run's config.json, a JPEG, random bytes."""
    files = [
        tmp_path / "config.json",
        tmp_path / "photo.jpg",
        tmp_path / "noise.pth",
        tmp_path / "noise.caffemodel",
    ]
    files[0].write_text('{"model": "D", "epochs": 74}')
    Image.new("RGB", (8, 8)).save(files[1])
    noise = np.random.default_rng(0).integers(1, 256, 4096, dtype=np.uint8)
    noise[0] = 7  # not a pickle's first byte
    files[2].write_bytes(noise.tobytes())
    files[3].write_bytes(files[1].read_bytes())  # a JPEG named .caffemodel
    return files


def test_a_file_that_is_not_weights_is_named_so_with_the_formats_read(not_weights):
    for path in not_weights:
        with pytest.raises(WeightsError) as e:
            vggfeat.vgg(weights=path)
        said = str(e.value)
        assert f"{path} is not a weights file" in said and "torchvision/timm .pth state dicts" in said
        assert "weights_only" not in said and "file an issue" not in said.lower()
    r = vggfeat_command(
        "extract", not_weights[1], "--out", not_weights[1].with_name("feats.npy"), "--weights", not_weights[0]
    )
    assert r.returncode == 2 and f"{not_weights[0]} is not a weights file; vggfeat reads" in r.stderr
    assert "Traceback" not in r.stderr and "weights_only" not in r.stderr


def test_a_pickled_whole_model_says_to_save_its_state_dict(tmp_path, tiny):
    path = tmp_path / "model.pth"
    torch.save(tiny("A"), path)
    with pytest.raises(WeightsError, match=r"model.pth holds pickled Python objects.*model.state_dict\(\)"):
        vggfeat.vgg(weights=path)


def test_saved_weights_follow_the_umask(tmp_path, tiny):
    """A weights file gets the mode any file the user creates gets (0644 under umask 022),
    not the 0600 safetensors gives its own files, so a shared run folder stays readable."""
    import stat

    old = os.umask(0o022)
    try:
        path = vggfeat.save_weights(tiny("A"), tmp_path / "w.safetensors")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
