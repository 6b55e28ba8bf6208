"""Caffe release import (issue 8): tiny .caffemodel files written in both encodings and both shape
styles, checked against the arrays written, a hand-encoded file, and a forward pass built
independently from torchvision's layer table with the Caffe preprocessing done by hand."""

from __future__ import annotations

import struct
from collections import OrderedDict

import numpy as np
import pytest
import torch
from _caffe_writer import write_caffemodel
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

import vggfeat
from vggfeat.errors import WeightsError
from vggfeat.weights.caffe import caffe_to_state_dict, infer_caffe_arch, infer_caffe_config, read_caffemodel

WIDTH, FC_DIM, NUM_CLASSES = 1 / 16, 32, 10
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # the release's mean pixel, B, G, R, in 0-255


def scaled_cfg(config: str, width: float = WIDTH) -> list:
    """torchvision's table for a config with the widths scaled (independent of vggfeat.nets.models)."""
    return [v if v == "M" else max(1, round(v * width)) for v in cfgs[config]]


def tiny_layers(config: str, seed: int = 0, *, fc_dim=FC_DIM, num_classes=NUM_CLASSES):
    """Caffe-named random blobs in torch shapes: conv{block}_{n} (out, in, 3, 3), fc6/7/8 (out, in).
    He-scaled so activations stay O(1) through 16 layers."""
    rng = np.random.default_rng(seed)
    layers, cin, block, n = [], 3, 1, 0
    for v in scaled_cfg(config):
        if v == "M":
            block, n = block + 1, 0
            continue
        n += 1
        w = rng.standard_normal((v, cin, 3, 3)) * np.sqrt(2 / (cin * 9))
        layers.append((f"conv{block}_{n}", [w.astype(np.float32), rng.standard_normal(v).astype(np.float32)]))
        cin = v
    dims = [(fc_dim, cin * 7 * 7), (fc_dim, fc_dim), (num_classes, fc_dim)]
    for name, (o, i) in zip(("fc6", "fc7", "fc8"), dims):
        w = rng.standard_normal((o, i)) * np.sqrt(2 / i)
        layers.append((name, [w.astype(np.float32), rng.standard_normal(o).astype(np.float32)]))
    return layers


def torchvision_keys(config: str) -> list[str]:
    """State-dict prefixes of the weight layers in torchvision's VGG, in order."""
    feats = make_layers(scaled_cfg(config))
    convs = [f"features.{i}" for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]
    return convs + ["classifier.0", "classifier.3", "classifier.6"]


def build(config, path, **kw):
    return vggfeat.vgg(
        config, width=WIDTH, fc_dim=FC_DIM, num_classes=kw.pop("num_classes", NUM_CLASSES), weights=path, **kw
    )


@pytest.mark.parametrize("config", ["D", "E"])
@pytest.mark.parametrize("encoding", ["layer", "v1"])
@pytest.mark.parametrize("shape_style", ["shape", "nchw"])
def test_load_equals_written_arrays(tmp_path, config, encoding, shape_style):
    layers = tiny_layers(config)
    path = write_caffemodel(tmp_path / "tiny.caffemodel", layers, encoding=encoding, shape_style=shape_style)
    model = build(config, path)
    sd = model.state_dict()
    keys = torchvision_keys(config)
    assert len(keys) == len(layers)
    assert set(sd) == {f"{k}.{s}" for k in keys for s in ("weight", "bias")}
    for key, (_, (w, b)) in zip(keys, layers):
        assert torch.equal(sd[f"{key}.weight"], torch.from_numpy(w))
        assert torch.equal(sd[f"{key}.bias"], torch.from_numpy(b))
    assert model.preprocess == vggfeat.Preprocess.caffe()


@pytest.mark.parametrize("encoding", ["layer", "v1"])
def test_reader_keeps_declared_shapes_and_skips_blobless_layers(tmp_path, encoding):
    layers = tiny_layers("D")
    path = write_caffemodel(tmp_path / "d.caffemodel", layers, encoding=encoding, shape_style="nchw")
    got = read_caffemodel(path)
    assert [n for n, _ in got] == [n for n, _ in layers]  # no relu/pool/drop/prob
    for (_, blobs), (_, arrays) in zip(got, layers):
        for blob, arr in zip(blobs, arrays):
            assert blob.dtype == np.float32
            assert blob.shape == (1,) * (4 - arr.ndim) + arr.shape  # legacy 4-d (num, c, h, w)
            np.testing.assert_array_equal(blob.reshape(arr.shape), arr)


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("double", [False, True])
def test_non_packed_and_double_data(tmp_path, packed, double):
    layers = tiny_layers("D", seed=3)
    path = write_caffemodel(tmp_path / "x.caffemodel", layers, packed=packed, double=double)
    model = build("D", path)
    for key, (_, (w, b)) in zip(torchvision_keys("D"), layers):
        assert torch.equal(model.state_dict()[f"{key}.weight"], torch.from_numpy(w))
        assert torch.equal(model.state_dict()[f"{key}.bias"], torch.from_numpy(b))


# Independent of vggfeat.weights.caffe's encoder: a NetParameter spelled out byte by byte.
def _varint(v: int) -> bytes:
    out = b""
    while v > 0x7F:
        out += bytes([v & 0x7F | 0x80])
        v >>= 7
    return out + bytes([v])


def _field(num: int, wire: int, payload: bytes) -> bytes:
    key = _varint(num << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _hand_file(n_values: int = 6) -> bytes:
    values = struct.pack(f"<{n_values}f", *[0.5 * i - 1 for i in range(n_values)])
    shape = _field(7, 2, _field(1, 2, _varint(2) + _varint(3)))  # BlobShape {dim: 2 dim: 3} packed
    blob = shape + _field(5, 2, values)
    layer = _field(1, 2, b"fc8") + _field(2, 2, b"InnerProduct") + _field(10, 0, _varint(1))
    bias = _field(7, 2, _field(1, 2, _varint(2))) + _field(5, 2, values[:8])
    layer += _field(7, 2, blob) + _field(7, 2, bias)
    relu = _field(1, 2, b"relu7") + _field(2, 2, b"ReLU")
    # V1 layer: name = 4, type = 5 (enum 4 = CONVOLUTION), blobs = 6 with legacy dims and non-packed data
    v1_blob = b"".join(_field(i, 0, _varint(d)) for i, d in zip((1, 2, 3, 4), (1, 1, 1, 2)))
    v1_blob += _field(5, 5, struct.pack("<f", 3.25)) + _field(5, 5, struct.pack("<f", -7.0))
    v1_blob += _field(6, 2, struct.pack("<2f", 9, 9))  # diff: ignored
    v1 = _field(4, 2, b"conv1_1") + _field(5, 0, _varint(4)) + _field(6, 2, v1_blob)
    unknown = _field(99, 1, b"\x00" * 8) + _field(98, 5, b"\x00" * 4)
    return _field(1, 2, b"VGG") + unknown + _field(2, 2, v1) + _field(100, 2, relu) + _field(100, 2, layer)


def test_hand_encoded_file(tmp_path):
    path = tmp_path / "hand.caffemodel"
    path.write_bytes(_hand_file())
    (n1, (b1,)), (n2, (w, b)) = read_caffemodel(path)
    assert (n1, n2) == ("conv1_1", "fc8")
    np.testing.assert_array_equal(b1, np.array([3.25, -7.0], np.float32).reshape(1, 1, 1, 2))
    np.testing.assert_array_equal(w, np.array([[-1, -0.5, 0], [0.5, 1, 1.5]], np.float32))
    np.testing.assert_array_equal(b, np.array([-1, -0.5], np.float32))


def test_data_length_disagreeing_with_shape(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(_hand_file(n_values=5))
    with pytest.raises(WeightsError, match=r"bad\.caffemodel.*fc8.*\(2, 3\).*6 values.*holds 5"):
        read_caffemodel(path)


@pytest.mark.parametrize("config", ["D", "E"])
def test_forward_matches_hand_made_caffe_pipeline(tmp_path, config):
    layers = tiny_layers(config, seed=1)
    path = write_caffemodel(tmp_path / "m.caffemodel", layers, encoding="v1", shape_style="nchw")
    model = build(config, path).eval()

    # Reference net: torchvision's feature builder, a plain classifier, the written arrays.
    ref = nn.Sequential(
        OrderedDict(
            features=make_layers(scaled_cfg(config)),
            flatten=nn.Flatten(),  # 224 input: pool5 is already 7x7
            classifier=nn.Sequential(
                nn.Linear(*layers[-3][1][0].shape[::-1]),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(FC_DIM, FC_DIM),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(FC_DIM, NUM_CLASSES),
            ),
        )
    ).eval()
    ref.load_state_dict(
        {
            f"{k}.{s}": torch.from_numpy(a)
            for k, (_, arrays) in zip(torchvision_keys(config), layers)
            for s, a in zip(("weight", "bias"), arrays)
        }
    )
    rgb = np.random.default_rng(2).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    # Caffe's convention by hand: BGR, 0-255, minus the mean pixel.
    bgr = rgb[..., ::-1].astype(np.float64) - np.array(CAFFE_MEAN_BGR)
    ref_in = torch.from_numpy(bgr.transpose(2, 0, 1).astype(np.float32))[None]
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].float() / 255
    with torch.no_grad():
        out = model(model.preprocess.apply(x))
        want = ref(ref_in)
    assert out.shape == (1, NUM_CLASSES)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def bare(config, **kw):
    return vggfeat.vgg(config, **{**dict(width=WIDTH, fc_dim=FC_DIM, num_classes=NUM_CLASSES), **kw})


@pytest.mark.parametrize(("written", "asked"), [("D", "E"), ("E", "D")])
def test_wrong_config(tmp_path, written, asked):
    path = write_caffemodel(tmp_path / "w.caffemodel", tiny_layers(written))
    n = {"D": 13, "E": 16}[written]
    msg = rf"w\.caffemodel.*{n} conv layers.*VGG-{written}; use vgg\('{written}'"
    with pytest.raises(WeightsError, match=msg):
        caffe_to_state_dict(read_caffemodel(path), bare(asked), source=path)
    with pytest.raises(WeightsError, match=rf"w\.caffemodel.*VGG-{written}.*'{written}'"):
        build(asked, path)


def test_wrong_blob_shape_names_layer_and_shapes(tmp_path):
    layers = tiny_layers("D")
    w, b = layers[14][1]  # fc7
    assert layers[14][0] == "fc7"
    layers[14] = ("fc7", [w[:, :-1], b])
    path = write_caffemodel(tmp_path / "s.caffemodel", layers)
    with pytest.raises(WeightsError, match=r"s\.caffemodel.*fc7 weight.*\(32, 31\).*\(32, 32\)"):
        build("D", path)
    layers = tiny_layers("D")
    layers[2] = ("conv2_1", [layers[2][1][0], np.zeros(9, np.float32)])
    path = write_caffemodel(tmp_path / "s2.caffemodel", layers, shape_style="nchw")
    with pytest.raises(WeightsError, match=r"conv2_1 bias.*\(1, 1, 1, 9\).*\(8,\)"):
        build("D", path)


def test_wrong_num_classes_suggests_the_fitting_model(tmp_path):
    path = write_caffemodel(tmp_path / "c.caffemodel", tiny_layers("D"))
    with pytest.raises(WeightsError, match=r"fc8.*vgg\('D', width=0.0625, fc_dim=32, num_classes=10\)"):
        caffe_to_state_dict(read_caffemodel(path), bare("D", num_classes=5), source=path)


@pytest.mark.parametrize("encoding", ["layer", "v1"])
def test_truncated_file(tmp_path, encoding):
    path = write_caffemodel(tmp_path / "t.caffemodel", tiny_layers("D"), encoding=encoding)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"t\.caffemodel.*truncated"):
        read_caffemodel(path)
    with pytest.raises(WeightsError, match=r"t\.caffemodel"):
        build("D", path)


def test_missing_empty_and_non_caffe_files(tmp_path):
    with pytest.raises(WeightsError, match="nope.caffemodel"):
        read_caffemodel(tmp_path / "nope.caffemodel")
    with pytest.raises(WeightsError, match="nope.caffemodel"):
        build("D", tmp_path / "nope.caffemodel")
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.caffemodel.*empty"):
        read_caffemodel(tmp_path / "empty.caffemodel")
    (tmp_path / "deploy.caffemodel").write_text('name: "VGG_ILSVRC_16_layers"\ninput: "data"\n')
    with pytest.raises(WeightsError, match="deploy.caffemodel"):
        read_caffemodel(tmp_path / "deploy.caffemodel")


def test_batch_norm_model_refused(tmp_path):
    path = write_caffemodel(tmp_path / "bn.caffemodel", tiny_layers("D"))
    with pytest.raises(WeightsError, match=r"bn\.caffemodel.*batch_norm=False"):
        caffe_to_state_dict(read_caffemodel(path), bare("D", batch_norm=True), source=path)


def test_infer_config_and_arch(tmp_path):
    for config in ("D", "E"):
        layers = read_caffemodel(write_caffemodel(tmp_path / f"{config}.caffemodel", tiny_layers(config)))
        assert infer_caffe_config(layers) == config
        assert infer_caffe_arch(layers) == dict(
            config=config, width=WIDTH, fc_dim=FC_DIM, num_classes=NUM_CLASSES, batch_norm=False
        )
    b = tiny_layers("B")  # 10 conv layers: no Caffe release
    with pytest.raises(WeightsError, match="10 conv layers"):
        infer_caffe_config(b)
    with pytest.raises(WeightsError, match="10 conv layers.*it is not VGG-D or VGG-E"):
        caffe_to_state_dict(b, bare("D"), "b")


def test_pytorch_conversion_of_caffe_weights_gets_caffe_preprocessing(tmp_path):
    layers = tiny_layers("D", seed=4)
    sd = {
        f"{k}.{s}": torch.from_numpy(a)
        for k, (_, arrays) in zip(torchvision_keys("D"), layers)
        for s, a in zip(("weight", "bias"), arrays)
    }
    path = tmp_path / "vgg16_caffe.pth"
    torch.save(sd, path)
    model = build("D", path, preprocess="caffe")
    assert model.preprocess == vggfeat.Preprocess.caffe()
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)
    assert build("D", path).preprocess.name == "imagenet"  # a bare state dict means torchvision's


@pytest.mark.parametrize("packed", [True, False])
def test_large_blob_is_read_exactly(tmp_path, packed):
    # fc6 of the real file is 4096 x 25088; a 2000 x 3000 blob must not take a Python loop per value
    rng = np.random.default_rng(5)
    big = rng.standard_normal((2000, 3000), dtype=np.float32)
    bias = rng.standard_normal(2000, dtype=np.float32)
    path = write_caffemodel(tmp_path / "big.caffemodel", [("fc6", [big, bias])], packed=packed)
    ((name, (w, b)),) = read_caffemodel(path)
    assert name == "fc6"
    np.testing.assert_array_equal(w, big)
    np.testing.assert_array_equal(b, bias)


@pytest.mark.parametrize("config", ["D", "E"])
def test_config_none_reads_architecture_off_the_file(tmp_path, config):
    layers = tiny_layers(config, seed=6)
    path = write_caffemodel(tmp_path / "n.caffemodel", layers, encoding="v1", shape_style="nchw")
    model = vggfeat.vgg(None, weights=path)
    assert model.arch == dict(
        config=config, num_classes=NUM_CLASSES, width=WIDTH, fc_dim=FC_DIM, batch_norm=False, crop=224
    )
    assert model.preprocess == vggfeat.Preprocess.caffe()
    for key, (_, (w, b)) in zip(torchvision_keys(config), layers):
        assert torch.equal(model.state_dict()[f"{key}.weight"], torch.from_numpy(w))
        assert torch.equal(model.state_dict()[f"{key}.bias"], torch.from_numpy(b))
