"""Weights I/O: torchvision checkpoints unchanged, our safetensors with metadata, clear errors."""

import os

import pytest
import torch
import torchvision
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
