"""timm's model conventions: features_only/out_indices/feature_info, num_features,
reset_classifier, pretrained_cfg, and checkpoints in timm's VGG layout.

References are written independently of vggfeat: timm's feature-info rule applied to
torchvision's own layer lists, torchvision's modules run by hand, and a timm-layout model built
here from nn.Conv2d/nn.Linear the way timm converts torchvision's file (its ``_filter_fn``)."""

import pytest
import timm
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
    for out, info in zip(outs, fm.feature_info.get_dicts()):
        idx = int(info["module"].split(".")[1])
        torch.testing.assert_close(out, ref[idx], rtol=0, atol=0)
        r = info["reduction"]
        assert out.shape == (2, info["num_chs"], 64 // r, 96 // r)


def test_out_indices_negative_int_and_names(tiny):
    kw = dict(width=1 / 16, fc_dim=32, num_classes=10, features_only=True)
    full = vggfeat.vgg("D", **kw).feature_info
    assert vggfeat.vgg("D", out_indices=(1, -1), **kw).feature_info.get_dicts() == [full[1], full[5]]
    # timm: an int n = the last n
    assert vggfeat.vgg("D", out_indices=2, **kw).feature_info.get_dicts() == full.info[4:]
    fm = vggfeat.vgg("D", out_indices=("conv3_1", "pool2"), **kw)
    assert fm.feature_info.layer_name() == ["conv3_1", "pool2"]
    assert fm.feature_info.reduction() == [4, 4] and fm.feature_info.channels() == [16, 8]
    # a name that is a stage is that stage; another is appended to info with its own index
    assert fm.feature_info.out_indices == (6, 7) and fm.feature_info[7]["index"] == 7
    assert vggfeat.vgg("D", out_indices=("conv2_2", -1), **kw).feature_info.out_indices == (1, -1)
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
    assert m.head_hidden_size == 24 == m.classifier[3].out_features and m.num_features == 32
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
    assert m(x).shape == (2, m.head_hidden_size)
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
    # the Caffe release's BGR mean pixel on 0-255, in [0, 1] units, kept apart from "mean"
    assert cfg["bgr_mean"] == pytest.approx((103.939 / 255, 116.779 / 255, 123.68 / 255))
    assert cfg["bgr_std"] == pytest.approx((1 / 255,) * 3) and cfg["channel_order"] == "BGR"
    for read in (lambda: cfg["mean"], lambda: cfg.get("std", 0)):
        with pytest.raises(ValueError, match="take BGR input"):
            read()
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


# ------------------------------------------------------------------------- against the real timm
TINY_CFG = [4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32, "M"]  # timm's cfg of A at width 1/16


@pytest.fixture(scope="module")
def timm_pair():
    """timm's own VGG class (random init, its head of width 4096) and vggfeat's model loaded from
    timm's state dict, in eval mode."""
    torch.manual_seed(0)
    net = timm.models.vgg.VGG(TINY_CFG, num_classes=10).eval()
    return net, vggfeat.vgg(None, weights=net.state_dict()).eval()


def test_widths_follow_timm(timm_pair):
    net, m = timm_pair
    assert (m.num_features, m.head_hidden_size) == (net.num_features, net.head_hidden_size) == (32, 4096)
    with torch.device("meta"):
        d = vggfeat.vgg("D")
    assert (d.num_features, d.head_hidden_size) == (512, 4096)  # timm's vgg16: 512 and 4096
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert m.forward_features(x).shape[1] == m.num_features
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape[1] == m.head_hidden_size
        torch.testing.assert_close(m(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("indices", [None, 2, [1, -1], [0, 3]])
@pytest.mark.parametrize("stop_early", [False, True])
def test_forward_intermediates_equals_timms(timm_pair, indices, stop_early):
    net, m = timm_pair
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        final, maps = m.forward_intermediates(x, indices, stop_early=stop_early)
        ref_final, ref_maps = net.forward_intermediates(x, indices, stop_early=stop_early)
        only = m.forward_intermediates(x, indices, intermediates_only=True)
    assert len(maps) == len(ref_maps) == len(only)
    for a, b, c in zip(maps, ref_maps, only):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(c, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="'NCHW' only"):
        m.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("size", [(300, 224), (320, 256), (256, 300)])
def test_dense_equals_timm_at_other_sizes_where_forward_does_not(timm_pair, size):
    """timm's VGG is fully convolutional: its logits at any size >= the crop are the Sec. 3.2
    dense map of the same weights, averaged (fc8 is linear, so averaging fc7 first is the same)."""
    net, m = timm_pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(m.dense()(x).mean((2, 3)), ref, rtol=1e-4, atol=1e-5)
        assert (m(x) - ref).abs().max() > 1e-3  # forward is torchvision's, as documented
    assert "model.dense()(x).mean((2, 3))" in vggfeat.VGG.forward.__doc__


def test_at_300x200_timm_stretches_what_dense_refuses(timm_pair):
    """Below the crop, timm's ConvMlp stretches the 9x6 pool5 map to 9x7 (an adaptive average);
    dense() never stretches (the paper's Q >= 224) and says so."""
    net, m = timm_pair
    x = torch.randn(1, 3, 300, 200)
    with torch.no_grad():
        fc7 = net.pre_logits(torch.nn.functional.adaptive_avg_pool2d(net.forward_features(x), (9, 7)))
        torch.testing.assert_close(net(x), net.head.fc(fc7.mean((2, 3))), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 224 pixels"):
        m.dense()(x)


def test_reset_classifier_takes_timms_global_pool(timm_pair):
    net, m = timm_pair
    m = vggfeat.vgg(None, weights=net.state_dict())
    m.reset_classifier(5, "avg")
    net.reset_classifier(5, "avg")  # the same call on timm's model
    assert m.get_classifier().weight.shape == net.get_classifier().weight.shape == (5, 4096)
    m.reset_classifier(3, global_pool=None)
    assert m.num_classes == 3
    with pytest.raises(ValueError, match=r"global_pool='max'.*dense\(\)"):
        m.reset_classifier(3, global_pool="max")


def test_create_model_keywords_keep_timms_meaning_or_are_refused(fake_vgg16):
    cfg = vggfeat.vgg(pretrained=True).pretrained_cfg  # timm: pretrained=True, the default weights
    assert cfg["source"] == vggfeat.vgg(weights="default").pretrained_cfg["source"] != None  # noqa: E711
    assert vggfeat.vgg("A", pretrained=False, width=0.1, fc_dim=16).pretrained_cfg["source"] is None
    net = timm.models.vgg.VGG(TINY_CFG, num_classes=10, drop_rate=0.2)  # timm's two dropouts
    m = vggfeat.vgg("A", width=1 / 16, drop_rate=0.2, global_pool="avg")
    drops = [mod.p for mod in m.classifier if isinstance(mod, nn.Dropout)]
    assert drops == [net.pre_logits.drop.p, net.head.drop.p] == [0.2, 0.2]
    with pytest.raises(ValueError, match=r"in_chans=1: .*RGB"):
        vggfeat.vgg("A", in_chans=1)
    with pytest.raises(ValueError, match="contradicts"):
        vggfeat.vgg(pretrained=False, weights="default")
    with pytest.raises(ValueError, match="disagree"):
        vggfeat.vgg("A", drop_rate=0.2, dropout=0.1)
    with pytest.raises(ValueError, match="global_pool='catavgmax'"):
        vggfeat.vgg("A", global_pool="catavgmax")
    with pytest.raises(TypeError, match="unexpected keyword argument 'drop_path_rate'"):
        vggfeat.vgg("A", drop_path_rate=0.1)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4, 5), (1, -1), 2, (0, 3)])
def test_feature_info_matches_timms_features_only(out_indices):
    with torch.device("meta"):
        ref = timm.create_model("vgg16", features_only=True, out_indices=out_indices).feature_info
        ours = vggfeat.vgg("D", features_only=True, out_indices=out_indices).feature_info
    keys = ["num_chs", "reduction", "module", "index"]
    assert ours.out_indices == ref.out_indices and len(ours) == len(ref) == 6
    assert ours.get_dicts(keys) == ref.get_dicts(keys)
    assert [ours[i]["index"] for i in range(6)] == list(range(6))
    for name in ("channels", "reduction", "module_name"):
        assert getattr(ours, name)() == getattr(ref, name)()
        assert getattr(ours, name)(0) == getattr(ref, name)(0)  # an int: any output by its index
        assert getattr(ours, name)([2, 5]) == getattr(ref, name)([2, 5])


def test_features_only_state_dict_of_timm_loads(tmp_path):
    with torch.device("meta"):  # timm's vgg16_bn features_only keys: features_N, not features.N
        sd = timm.create_model("vgg16_bn", features_only=True).state_dict()
        ours = vggfeat.vgg("D", batch_norm=True, features_only=True)
    assert "features_1.running_mean" in sd and "features.1.running_mean" in ours.state_dict()
    ours.load_state_dict(sd, assign=True)  # strict: every key maps
    # values: timm's FeatureListNet (what features_only builds) over a tiny timm VGG
    torch.manual_seed(1)
    tiny = timm.models.FeatureListNet(timm.models.vgg.VGG(TINY_CFG), (0, 2, 5), flatten_sequential=True)
    torch.save(tiny.state_dict(), tmp_path / "features_only.pth")
    fm = vggfeat.vgg("A", width=1 / 16, fc_dim=8, features_only=True, out_indices=(0, 2, 5)).eval()
    fm.load_state_dict(torch.load(tmp_path / "features_only.pth"))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(fm(x), tiny.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    converted = vggfeat.weights.layouts.to_torchvision(tiny.state_dict())
    assert set(converted) == set(fm.state_dict())


def test_caffe_cfg_is_refused_by_timms_data_functions_and_torchvisions_is_used_right(fake_vgg16):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    caffe = vggfeat.vgg("A", width=1 / 16, preprocess="caffe")
    with pytest.raises(ValueError, match="take BGR input"):
        create_transform(**resolve_data_config(model=caffe))
    m = vggfeat.vgg(weights="default")
    cfg = resolve_data_config(model=m)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    assert cfg["interpolation"] == "bilinear"
    img = Image.fromarray(torch.randint(0, 256, (300, 400, 3), dtype=torch.uint8).numpy())
    got = create_transform(**cfg)(img)
    # torchvision's own eval transform of VGG16_Weights.IMAGENET1K_V1: resize 256, crop 224, normalise
    want = torchvision.models.VGG16_Weights.IMAGENET1K_V1.transforms()(img)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# ------------------------------------------------- the conventions timm's own model tests check
# (tests/test_timm_suite.py runs timm's tests/test_models.py itself; these are the quick checks)
def test_default_cfg_is_pretrained_cfg_with_the_pool5_size():
    for crop, side in ((224, 7), (64, 2)):
        m = vggfeat.vgg("A", width=1 / 16, fc_dim=16, crop=crop)
        assert m.default_cfg is m.pretrained_cfg and m.default_cfg["pool_size"] == (side, side)
        x = torch.randn(1, *m.default_cfg["input_size"])
        assert m.forward_features(x).shape[-2:] == (side, side) and m.in_chans == 3 == x.shape[1]
    fm = vggfeat.vgg("A", width=1 / 16, fc_dim=16, features_only=True)
    assert fm.default_cfg is fm.pretrained_cfg and fm.in_chans == 3


def test_builder_places_parameters_with_device_and_dtype(tmp_path):
    m = vggfeat.vgg("D", device="meta", dtype=torch.float64)  # no context: nothing allocated
    assert {(p.device.type, p.dtype) for p in m.parameters()} == {("meta", torch.float64)}
    m = vggfeat.vgg("A", width=1 / 16, fc_dim=16, dtype="bfloat16", batch_norm=True)
    assert {t.dtype for t in m.state_dict().values() if t.is_floating_point()} == {torch.bfloat16}
    file = vggfeat.save_weights(vggfeat.vgg("A", width=1 / 16, fc_dim=16), tmp_path / "a.safetensors")
    assert next(vggfeat.vgg(weights=file, dtype=torch.float64).parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="torch dtype"):
        vggfeat.vgg("A", dtype="float99")


def test_reset_classifier_keeps_mode_device_dtype_and_frozen_layers():
    m = vggfeat.vgg("A", width=1 / 16, fc_dim=16, device="meta", dtype=torch.float64).eval()
    m.requires_grad_(False)
    m.reset_classifier(0)
    m.reset_classifier(2)
    fc8 = m.get_classifier()
    assert (fc8.weight.device.type, fc8.weight.dtype, fc8.training) == ("meta", torch.float64, False)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.6.weight", "classifier.6.bias"]  # a linear probe, as in timm
    m.train().reset_classifier(3)
    assert m.get_classifier().training


def test_global_pool_takes_timms_values_or_refuses_as_timm_does():
    x = torch.randn(2, 3, 224, 256)
    m = vggfeat.vgg("A", width=1 / 16, fc_dim=16, num_classes=0, global_pool="").eval()
    with torch.no_grad():  # no pooling: the unpooled pool5 map, forward_features' output
        torch.testing.assert_close(m(x), m.forward_features(x), rtol=0, atol=0)
        assert m(x).shape == (2, 32, 7, 8) and m.head_hidden_size == m.num_features == 32
        m.reset_classifier(5, "avg")
        assert m(x[..., :224]).shape == (2, 5) and m.head_hidden_size == 16
        m.reset_classifier(0, "")
        assert m(x).ndim == 4
    for bad in (lambda: vggfeat.vgg("A", global_pool="max"), lambda: m.reset_classifier(3, "catavgmax")):
        with pytest.raises(AssertionError, match="dense"):  # timm's models refuse with an AssertionError
            bad()


def test_feature_info_is_the_list_timms_feature_wrappers_read():
    from timm.models import FeatureInfo
    from timm.models._features import FeatureGetterNet

    torch.manual_seed(0)
    m = vggfeat.vgg("A", width=1 / 16, fc_dim=16).eval()
    assert isinstance(m.feature_info, list) and all(isinstance(d, dict) for d in m.feature_info)
    assert FeatureInfo(m.feature_info, 6).channels() == m.feature_info.channels()
    x = torch.randn(1, 3, 64, 96)
    ref = vggfeat.FeatureMaps(m, (1, 3))(x)
    for cls in ("getter", "list", FeatureGetterNet):
        net = vggfeat.vgg(weights=m.state_dict(), features_only=True, feature_cls=cls, out_indices=(1, 3))
        with torch.no_grad():
            got = net.eval()(x)
        assert net.default_cfg["pool_size"] == (7, 7) and len(got) == 2
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="feature_cls='dict'"):
        vggfeat.vgg("A", width=1 / 16, fc_dim=16, features_only=True, feature_cls="dict")


def test_forward_scripts_and_traces_to_the_same_logits():
    from torch.fx import symbolic_trace

    torch.manual_seed(0)
    m = vggfeat.vgg("D", width=1 / 16, fc_dim=16, batch_norm=True).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        want = m(x)
        torch.testing.assert_close(torch.jit.script(m)(x), want)
        torch.testing.assert_close(symbolic_trace(m)(x), want)
    small = vggfeat.vgg("A", width=1 / 16, fc_dim=16, crop=64).eval()
    for run in (small, torch.jit.script(small), symbolic_trace(small)):  # the size check still runs
        with pytest.raises(Exception, match="model.dense"):
            run(torch.randn(1, 3, 96, 64))


def test_prune_intermediate_layers_keeps_timms_taps_and_drops_unused_layers(timm_pair):
    import copy

    net, m = timm_pair
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        taps = m.forward_intermediates(x, intermediates_only=True)
    for i in range(6):
        ours, theirs = copy.deepcopy(m), copy.deepcopy(net)
        kept = ours.prune_intermediate_layers([i])
        assert kept == theirs.prune_intermediate_layers([i]) == [i]
        assert len(ours.features) == len(theirs.features)
        with torch.no_grad():
            torch.testing.assert_close(
                ours.forward_intermediates(x, kept, intermediates_only=True)[0], taps[i]
            )
            torch.testing.assert_close(ours(x), theirs.forward_features(x))  # the head went
        assert ours.num_classes == 0 and ours.head_hidden_size == ours.num_features == taps[i].shape[1]
        ours.train()
        ours(x).sum().backward()
        assert all(p.grad is not None for p in ours.parameters())  # nothing left unused (DDP)
        if i < 5:
            with pytest.raises(ValueError, match="past the end of this pruned net"):
                ours.forward_intermediates(x, [5])
    kept = copy.deepcopy(m)
    kept.prune_intermediate_layers([5], prune_head=False)  # nothing to cut: the same net
    with torch.no_grad():
        torch.testing.assert_close(kept(x), m(x))
