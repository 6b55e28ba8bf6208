"""timm's model conventions: features_only/out_indices/feature_info, num_features,
reset_classifier, pretrained_cfg, and checkpoints in timm's VGG layout.

References are written independently of vggfeat: timm's feature-info rule applied to
torchvision's own layer lists, torchvision's modules run by hand, and a timm-layout model built
here from nn.Conv2d/nn.Linear the way timm converts torchvision's file (its ``_filter_fn``)."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as TV_CFGS
from torchvision.models.vgg import make_layers

import vggfeat
from vggfeat import WeightsError


def timm_feature_info(cfg: list, batch_norm: bool) -> list[dict]:
    """timm/models/vgg.py's rule: before every 'M', the module just built (the block's last
    ReLU); at the end, the last module (pool5); reduction doubles at each 'M'."""
    info, n, chs, stride = [], 0, 3, 1
    for v in cfg:
        if v == "M":
            info.append(dict(num_chs=chs, reduction=stride, module=f"features.{n - 1}"))
            n, stride = n + 1, stride * 2
        else:
            n, chs = n + (3 if batch_norm else 2), v
    info.append(dict(num_chs=chs, reduction=stride, module=f"features.{n - 1}"))
    return info


@pytest.mark.parametrize("config", ["A", "B", "D", "E"])  # torchvision keys cfgs by our letters
@pytest.mark.parametrize("bn", [False, True])
def test_feature_info_follows_timms_rule_on_torchvisions_layouts(config, bn):
    with torch.device("meta"):
        m = vggfeat.vgg(config, batch_norm=bn)
    got = [{k: d[k] for k in ("num_chs", "reduction", "module")} for d in m.feature_info]
    assert got == timm_feature_info(TV_CFGS[config], bn)
    assert m.feature_info.channels() == [64, 128, 256, 512, 512, 512]
    assert m.feature_info.reduction() == [1, 2, 4, 8, 16, 32]


def test_feature_info_of_d_by_hand():
    with torch.device("meta"):
        m = vggfeat.vgg("D")
    assert m.feature_info.layer_name() == ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3", "pool5"]
    assert m.feature_info.module_name() == [f"features.{i}" for i in (3, 8, 15, 22, 29, 30)]
    assert m.feature_info.channels(2) == 256 and m.feature_info.reduction(5) == 32


@pytest.mark.parametrize("config", ["D", "A-LRN", "C"])
def test_features_only_returns_torchvisions_intermediate_maps(tiny, config):
    m = tiny(config)
    fm = vggfeat.vgg(config, width=1 / 16, fc_dim=32, num_classes=10, features_only=True)
    assert set(fm.state_dict()) <= set(m.state_dict())  # torchvision's keys, up to pool5
    fm.load_state_dict({k: m.state_dict()[k] for k in fm.state_dict()})
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        outs = fm(x)
        # reference: torchvision's modules applied one by one, output kept after each listed index
        ref, h = {}, x
        for i, mod in enumerate(m.features):
            h = mod(h)
            ref[i] = h.clone()
    assert len(outs) == 6
    for out, info in zip(outs, fm.feature_info):
        idx = int(info["module"].split(".")[1])
        torch.testing.assert_close(out, ref[idx], rtol=0, atol=0)
        r = info["reduction"]
        assert out.shape == (2, info["num_chs"], 64 // r, 96 // r)


def test_out_indices_negative_int_and_names(tiny):
    kw = dict(width=1 / 16, fc_dim=32, num_classes=10, features_only=True)
    full = vggfeat.vgg("D", **kw).feature_info
    assert vggfeat.vgg("D", out_indices=(1, -1), **kw).feature_info == [full[1], full[5]]
    assert vggfeat.vgg("D", out_indices=2, **kw).feature_info == full[4:]  # timm: an int n = last n
    fm = vggfeat.vgg("D", out_indices=("conv3_1", "pool2"), **kw)
    assert fm.feature_info.layer_name() == ["conv3_1", "pool2"]
    assert fm.feature_info.reduction() == [4, 4] and fm.feature_info.channels() == [16, 8]
    assert len(fm.features) == 12  # stops at conv3_1's ReLU (features.11)
    outs = fm(torch.randn(1, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(16, 8, 8), (8, 8, 8)]


@pytest.mark.parametrize(
    "bad,match",
    [((6,), "neither a stage index"), (("fc7",), "model.dense"), ((), "non-empty"), (7, "last n")],
)
def test_bad_out_indices_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        vggfeat.vgg("A", width=0.1, fc_dim=16, features_only=True, out_indices=bad)


def test_out_indices_without_features_only_is_an_error():
    with pytest.raises(ValueError, match="features_only=True"):
        vggfeat.vgg("A", width=0.1, fc_dim=16, out_indices=(1,))


def test_num_features_and_reset_classifier(tiny):
    m = tiny("B", fc_dim=24)
    assert m.num_features == 24 == m.classifier[3].out_features
    before = {k: v.clone() for k, v in m.state_dict().items()}
    d = m.dense()  # made before the reset: must see the new fc8
    m.reset_classifier(5)
    assert m.get_classifier() is m.classifier[6] and m.num_classes == 5 and m.arch["num_classes"] == 5
    assert m.classifier[6].weight.shape == (5, 24) and not m.classifier[6].bias.any()
    assert all(
        torch.equal(v, m.state_dict()[k]) for k, v in before.items() if not k.startswith("classifier.6")
    )
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(d(x).flatten(1), m(x), rtol=1e-4, atol=1e-5)
        m.reset_classifier(0)  # timm: no classifier, forward gives the pre-logits (fc7)
        assert m.num_classes == 0 and "fc8" not in m.layers
        assert torch.equal(m(x), m.forward_head(m.forward_features(x), pre_logits=True))
    assert m(x).shape == (2, m.num_features)
    with pytest.raises(ValueError, match="num_classes must be"):
        m.reset_classifier(-1)


def test_pretrained_cfg_of_torchvision_weights(fake_vgg16):
    m = vggfeat.vgg("D", weights="default")
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop"] == 224 and cfg["num_classes"] == 1000
    # torchvision's ImageClassification defaults for VGG16_Weights.IMAGENET1K_V1, written out here
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert "IMAGENET1K_V1" in cfg["source"] and cfg["provenance"].startswith("torchvision")
    m.reset_classifier(3)  # as in timm, the record keeps describing the weights
    assert m.pretrained_cfg["num_classes"] == 1000


def test_pretrained_cfg_of_our_file_and_of_caffe_preprocessing(tmp_path, tiny):
    m = tiny("A", crop=64, num_classes=7)
    p = vggfeat.save_weights(m, tmp_path / "a.safetensors", provenance="trained here")
    cfg = vggfeat.vgg(weights=p).pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["num_classes"] == 7
    assert cfg["source"] == str(p) and cfg["provenance"] == "trained here"
    cfg = vggfeat.vgg(weights=p, preprocess="caffe").pretrained_cfg
    # the Caffe release's BGR mean pixel on 0-255, in [0, 1] units
    assert cfg["mean"] == pytest.approx((103.939 / 255, 116.779 / 255, 123.68 / 255))
    assert cfg["std"] == pytest.approx((1 / 255,) * 3) and cfg["channel_order"] == "BGR"
    assert vggfeat.vgg("A", width=0.1, fc_dim=16).pretrained_cfg["source"] is None


# ---------------------------------------------------------------------------------- timm layout
def tiny_torchvision(
    config: str, bn: bool, width=1 / 16, fc_dim=32, num_classes=10
) -> torchvision.models.VGG:
    """torchvision's VGG class at a fraction of the width: its make_layers, avgpool and forward;
    the classifier narrowed but in torchvision's layout (Linear, ReLU, Dropout, ... 0/3/6)."""
    cfg = [v if v == "M" else max(1, round(v * width)) for v in TV_CFGS[config]]
    with torch.device("meta"):  # skip allocating torchvision's full-width classifier
        tv = torchvision.models.VGG(nn.Sequential(), num_classes=num_classes, init_weights=False)
    tv.features = make_layers(cfg, batch_norm=bn)
    c5 = cfg[-2]
    tv.classifier = nn.Sequential(
        nn.Linear(c5 * 49, fc_dim),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(fc_dim, fc_dim),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(fc_dim, num_classes),
    )
    for mod in tv.modules():  # non-trivial BN statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return tv.eval()


class TimmLayoutVGG(nn.Module):
    """timm's VGG module tree: features, pre_logits (ConvMlp: fc1 7x7 conv, fc2 1x1 conv), head.fc."""

    def __init__(self, tv: torchvision.models.VGG):
        super().__init__()
        fc6, fc7, fc8 = tv.classifier[0], tv.classifier[3], tv.classifier[6]
        c5 = fc6.in_features // 49
        self.features = tv.features
        self.pre_logits = nn.Module()
        self.pre_logits.fc1 = nn.Conv2d(c5, fc6.out_features, 7)
        self.pre_logits.fc2 = nn.Conv2d(fc7.in_features, fc7.out_features, 1)
        self.head = nn.Module()
        self.head.fc = nn.Linear(fc8.in_features, fc8.out_features)
        with torch.no_grad():  # timm's _filter_fn: reshape(-1, 512, 7, 7) and (-1, 4096, 1, 1)
            self.pre_logits.fc1.weight.copy_(fc6.weight.reshape(-1, c5, 7, 7))
            self.pre_logits.fc2.weight.copy_(fc7.weight.reshape(-1, fc7.in_features, 1, 1))
            self.head.fc.weight.copy_(fc8.weight)
            for a, b in ((self.pre_logits.fc1, fc6), (self.pre_logits.fc2, fc7), (self.head.fc, fc8)):
                a.bias.copy_(b.bias)

    def forward(self, x):  # timm's forward at 224: conv head, global average pool, Linear
        x = torch.relu(self.pre_logits.fc1(self.features(x)))
        x = torch.relu(self.pre_logits.fc2(x))
        return self.head.fc(x.mean((2, 3)))


@pytest.mark.parametrize("config,bn", [("A", False), ("D", True)])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_layout_checkpoint_loads_and_matches_torchvision(tmp_path, config, bn, suffix):
    torch.manual_seed(0)
    tv = tiny_torchvision(config, bn)
    timm_net = TimmLayoutVGG(tv).eval()
    sd = timm_net.state_dict()
    assert (
        sd["pre_logits.fc1.weight"].ndim == 4 and "head.fc.weight" in sd and "classifier.0.weight" not in sd
    )
    path = tmp_path / f"timm_vgg{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = vggfeat.vgg(None, weights=path).eval()
    assert m.config == config and m.arch["batch_norm"] == bn and m.num_classes == 10
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = tv(x)
        torch.testing.assert_close(timm_net(x), ref, rtol=1e-5, atol=1e-5)  # the hand-built timm net
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    # the converted weights are torchvision's exactly, so the model saves back in its layout
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in tv.state_dict().items())
    m2 = vggfeat.vgg(config, weights=TimmLayoutVGG(tv).state_dict(), batch_norm=bn)  # a dict, too
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())


def test_timm_layout_with_a_wrong_head_names_the_keys(tmp_path):
    torch.manual_seed(0)
    sd = TimmLayoutVGG(tiny_torchvision("A", False)).state_dict()
    del sd["head.fc.bias"]
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing keys \['classifier.6.bias'\]"):
        vggfeat.vgg("A", weights=path, width=1 / 16, fc_dim=32, num_classes=10)


def test_a_state_dict_of_neither_layout_names_both(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, path)
    with pytest.raises(WeightsError, match=r"none of the VGG layouts tried: torchvision's VGG .*timm's VGG"):
        vggfeat.vgg(None, weights=path)
