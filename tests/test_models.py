"""Table-1 networks against the paper's Table 2 and torchvision's own VGG."""

import math

import pytest
import torch
import torchvision
from torch import nn

import vggfeat
from vggfeat.nets.models import count_parameters

# Table 2 / docs/paper.md exact counts with 1000 classes
EXACT = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}
# Table 1 written out independently: (kernel, width) of every conv, "M" for a pool, "L" for LRN
TABLE1 = {
    "A": "3-64 M 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "A-LRN": "3-64 L M 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "B": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 M 3-512 3-512 M 3-512 3-512 M",
    "C": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 1-256 M 3-512 3-512 1-512 M 3-512 3-512 1-512 M",
    "D": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 3-256 M 3-512 3-512 3-512 M 3-512 3-512 3-512 M",
    "E": "3-64 3-64 M 3-128 3-128 M 3-256 3-256 3-256 3-256 M 3-512 3-512 3-512 3-512 M "
    "3-512 3-512 3-512 3-512 M",
    "B-5x5": "5-64 M 5-128 M 5-256 M 5-512 M 5-512 M",
}
TV = {
    "A": torchvision.models.vgg11,
    "B": torchvision.models.vgg13,
    "D": torchvision.models.vgg16,
    "E": torchvision.models.vgg19,
}
TV_BN = {
    "A": torchvision.models.vgg11_bn,
    "B": torchvision.models.vgg13_bn,
    "D": torchvision.models.vgg16_bn,
    "E": torchvision.models.vgg19_bn,
}


def layout(m):
    out = []
    for mod in m.features:
        if isinstance(mod, nn.Conv2d):
            out.append(f"{mod.kernel_size[0]}-{mod.out_channels}")
        elif isinstance(mod, nn.MaxPool2d):
            out.append("M")
        elif isinstance(mod, nn.LocalResponseNorm):
            assert (mod.size, mod.alpha, mod.beta, mod.k) == (5, 1e-4, 0.75, 2.0)
            out.append("L")
    return " ".join(out)


@pytest.mark.parametrize("config", list(TABLE1))
def test_table1_layout_and_parameter_count(config):
    with torch.device("meta"):
        m = vggfeat.vgg(config)
    assert layout(m) == TABLE1[config]
    if config in EXACT:
        assert count_parameters(m) == EXACT[config]
        assert (
            round(count_parameters(m) / 1e6)
            == {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}[config]
        )
    else:  # 5x5 control net by hand: five 5x5 convs, then the same head
        widths = [3, 64, 128, 256, 512, 512]
        convs = sum(25 * a * b + b for a, b in zip(widths, widths[1:]))
        head = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
        assert count_parameters(m) == convs + head


# full-size nets (~4 s each on 2 cores): D in the quick run, the other configs with the slow tests
@pytest.mark.parametrize("config", [c if c == "D" else pytest.param(c, marks=pytest.mark.slow) for c in TV])
@pytest.mark.parametrize("bn", [False, True])
def test_torchvision_state_dicts_load_both_ways_and_agree(config, bn):
    torch.manual_seed(0)
    tv = (TV_BN if bn else TV)[config]().eval()
    if bn:  # non-trivial running statistics, so eval-mode BN is exercised
        for mod in tv.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.data.uniform_(0.5, 1.5)
    ours = vggfeat.vgg(config, batch_norm=bn, weights=tv.state_dict()).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max() <= 1e-5
    tv2 = (TV_BN if bn else TV)[config]()
    tv2.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("config", list(TABLE1))
def test_dense_equals_net_at_224_and_map_size(config, tiny):
    m = tiny(config)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        d = m.dense()(x)
        assert d.shape == (2, 10, 1, 1)
        assert (d.flatten(1) - m(x)).abs().max() <= 1e-5
        for h, w in [(256, 256), (256, 341), (384, 512), (511, 300)]:
            out = m.dense()(torch.randn(1, 3, h, w))
            assert out.shape[-2:] == (h // 32 - 6, w // 32 - 6)
            assert m.dense().output_size(h, w) == (h // 32 - 6, w // 32 - 6)


def test_dense_rejects_small_inputs_and_shares_weights(tiny):
    m = tiny("A")
    dense = m.dense()
    with pytest.raises(ValueError, match="at least 224"):
        dense(torch.randn(1, 3, 223, 300))
    assert dense(torch.randn(1, 3, 64, 64), layer="pool5").shape[-2:] == (2, 2)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = dense(x).clone()
        m.classifier[6].bias.add_(1.0)
        assert torch.allclose(dense(x), before + 1.0, atol=1e-5)


def test_layer_names_and_forward_head(tiny):
    m = tiny("D")
    names = [f"conv{b}_{i}" for b, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)]
    assert set(names + [f"pool{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]) == set(m.layers)
    c = tiny("C")
    part, idx = c.layers["conv3_3"]
    assert c.features[idx - 1].kernel_size == (1, 1)  # the 1x1 conv, ReLU right after it
    assert "norm1" in tiny("A-LRN").layers
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fc7 = m.forward_head(m.forward_features(x), pre_logits=True)
        assert (fc7 >= 0).all() and fc7.shape == (2, 32)
        dense_fc7 = m.dense()(x, layer="fc7").flatten(1)
        assert (fc7 - dense_fc7).abs().max() <= 1e-5
        assert (m.classifier[6](fc7) - m(x)).abs().max() <= 1e-6


def test_init_glorot_and_normal():
    torch.manual_seed(0)
    m = vggfeat.vgg("A", width=0.25, fc_dim=256, init="glorot")
    conv = m.features[3]  # 16 -> 32 channels, 3x3
    fan_in, fan_out = 16 * 9, 32 * 9
    assert conv.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7
    assert torch.all(conv.bias == 0)
    m = vggfeat.vgg("A", width=0.25, fc_dim=256, init="normal", std=0.1)
    w = m.classifier[3].weight
    assert abs(w.std().item() - 0.1) < 0.005 and abs(w.mean().item()) < 0.005
    with pytest.raises(ValueError, match="init"):
        vggfeat.vgg("A", init="kaiming")


def test_init_glorot_relu_gains_every_layer_before_a_relu_but_not_fc8():
    torch.manual_seed(0)
    m = vggfeat.vgg("A", width=0.25, fc_dim=256, init="glorot-relu")
    for mod, fan_in, fan_out, gain in (
        (m.features[3], 16 * 9, 32 * 9, math.sqrt(2)),  # conv2_1: a ReLU follows
        (m.classifier[3], 256, 256, math.sqrt(2)),  # fc7
        (m.classifier[6], 256, 1000, 1.0),  # fc8: the softmax follows, plain Glorot
    ):
        bound = gain * math.sqrt(6 / (fan_in + fan_out))
        w = mod.weight
        assert w.abs().max() <= bound + 1e-7 and w.abs().max() > 0.95 * bound
        assert torch.all(mod.bias == 0)
    # what the gain is for: without batch norm, the variance of the activations survives the
    # ReLUs of A's eight convs with it, and shrinks several-fold with plain Glorot
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        spread = {
            init: vggfeat.vgg("A", width=0.25, fc_dim=256, init=init).forward_features(x).std().item()
            for init in ("glorot", "glorot-relu")
        }
    assert spread["glorot-relu"] > 4 * spread["glorot"]


def test_init_from_copies_first_four_convs_and_the_head(tiny):
    a, d = tiny("A", seed=1), tiny("D", seed=2)
    d0 = {k: v.clone() for k, v in d.state_dict().items()}
    vggfeat.init_from(a, d)
    # A's first four convs, by position in A: features 0 (conv1_1), 3 (conv2_1), 6, 8 (conv3_1/2)
    # land on D's layers of the same names: features 0, 5, 10, 12
    for ia, id_ in [(0, 0), (3, 5), (6, 10), (8, 12)]:
        assert torch.equal(d.features[id_].weight, a.features[ia].weight)
        assert torch.equal(d.features[id_].bias, a.features[ia].bias)
    for i in (0, 3, 6):
        assert torch.equal(d.classifier[i].weight, a.classifier[i].weight)
    for untouched in (2, 7, 14, 17):  # conv1_2, conv2_2, conv3_3, conv4_1
        assert torch.equal(d.features[untouched].weight, d0[f"features.{untouched}.weight"])
    with pytest.raises(ValueError, match="shape"):
        vggfeat.init_from(tiny("A", width=1 / 8), tiny("D"))


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        vggfeat.vgg("F")


@pytest.mark.parametrize("config,layer", [("C", "fc8"), ("A-LRN", "fc7"), ("E", "conv4_2"), ("B-5x5", "fc6")])
def test_flop_count_matches_torch_flop_counter(tiny, config, layer):
    from torch.utils.flop_counter import FlopCounterMode

    net = tiny(config).dense()
    x = torch.randn(1, 3, 256, 300)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, layer=layer)
    assert net.flops(256, 300, layer) == counter.get_total_flops()


# --- the paper's geometry at any crop (Sec. 3.1-3.2: fc6 covers the pool5 map of the crop) ----


@pytest.mark.parametrize("config", ["A", "D", "B-5x5"])
@pytest.mark.parametrize("crop", [32, 64, 96, 128])
def test_net_for_crop_c_has_fc6_over_its_pool5_map(config, crop):
    m = vggfeat.vgg(config, crop=crop, width=1 / 16, fc_dim=24, num_classes=7)
    k = crop // 32
    c5 = m.out_channels
    assert m.classifier[0].weight.shape == (24, c5 * k * k)
    assert isinstance(m.avgpool, torch.nn.Identity)  # nothing stretched
    # parameter count by hand: convs (+ biases) + fc6 (k x k x c5 inputs) + fc7 + fc8
    convs = [mod for mod in m.features if isinstance(mod, torch.nn.Conv2d)]
    n_conv = sum(c.in_channels * c.out_channels * c.kernel_size[0] ** 2 + c.out_channels for c in convs)
    assert vggfeat.count_parameters(m) == n_conv + (c5 * k * k + 1) * 24 + 25 * 24 + 25 * 7
    torch.manual_seed(0)
    m.eval()
    x = torch.randn(2, 3, crop, crop)
    with torch.no_grad():
        torch.testing.assert_close(m.dense()(x)[..., 0, 0], m(x), atol=1e-5, rtol=1e-5)
        assert m.dense()(torch.randn(1, 3, crop + 64, crop + 32)).shape[-2:] == (3, 2)
        assert m.dense().min_side() == crop
        with pytest.raises(ValueError, match=f"{crop}x{crop} crops"):
            m(torch.randn(1, 3, crop + 32, crop + 32))


def test_crop_224_keeps_torchvisions_adaptive_pool_and_layout():
    m = vggfeat.vgg("D", crop=224)
    assert isinstance(m.avgpool, torch.nn.AdaptiveAvgPool2d) and m.kernel == 7
    assert vggfeat.count_parameters(m) == 138_357_544


@pytest.mark.parametrize("crop", [0, 48, 100, 16])
def test_bad_crop_is_a_clear_error(crop):
    with pytest.raises(ValueError, match="multiple of 32"):
        vggfeat.vgg("A", crop=crop)


def test_saving_and_loading_keeps_the_crop(tmp_path):
    torch.manual_seed(0)
    m = vggfeat.vgg("C", crop=64, width=1 / 16, fc_dim=16, num_classes=3).eval()
    p = vggfeat.save_weights(m, tmp_path / "c.safetensors")
    m2 = vggfeat.vgg(None, weights=p)
    assert m2.crop == 64 and m2.arch == m.arch
    torch.save(m.state_dict(), tmp_path / "c.pth")  # bare: the crop is read off fc6's shape
    assert vggfeat.vgg(None, weights=tmp_path / "c.pth").crop == 64


def test_paper_scales_keep_the_papers_ratios():
    assert vggfeat.paper_scales(224) == (256, 384, 512)
    assert vggfeat.paper_scales(64) == (73, 110, 146)
    assert vggfeat.paper_scales(112, (256, 512)) == (128, 256)


def test_torchvisions_feature_extractor_gives_the_dense_fc7_of_extract():
    """torchvision's FX feature extraction, with torchvision's node names, on our net: its fc7
    (classifier.4, the ReLU after fc7) is the dense fc7 map of Sec. 3.2 on a 224 x 224 image (a
    1x1 map at the crop), which ``extract`` averages at one scale, without flip or norm."""
    import numpy as np
    from conftest import random_image
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    net = vggfeat.vgg("D", width=1 / 16, fc_dim=32, num_classes=10).eval()
    tv_nodes = get_graph_node_names(torchvision.models.vgg16())[1]
    ours = get_graph_node_names(net)[1]
    assert [n for n in ours if n != "check_pool5"] == tv_nodes  # one extra node: the size check
    fx = create_feature_extractor(net, {"classifier.4": "fc7"})
    img = random_image(224, 224, seed=3)
    x = net.preprocess.apply(torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        fc7 = fx(x)["fc7"]
        dense = net.dense()(x, "fc7")
    assert fc7.shape == (1, 32) and dense.shape == (1, 32, 1, 1)
    torch.testing.assert_close(fc7, dense.flatten(1), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="untrained"):  # the net's weights are random
        rows = vggfeat.extract([img], model=net, scales=224, flip=False, normalize=False, progress=False)
    torch.testing.assert_close(torch.from_numpy(rows), fc7, rtol=1e-5, atol=1e-6)
