"""The networks of Table 1 (and the Sec. 4.1 5x5 control net), built from one table.

Module layout and state-dict keys follow torchvision's VGG (``features.N``, ``avgpool``,
``classifier.0/3/6``), so torchvision checkpoints load unchanged with ``strict=True`` and our
checkpoints load into torchvision. On top of torchvision we add the paper's missing pieces:
configurations C (1x1 convs) and A-LRN, layer names (``conv3_2``, ``pool5``, ``fc7``), a
``forward_features``/``forward_head`` split, and ``dense()``, the fully-convolutional view of
Sec. 3.2 that shares this model's weights. timm's model conventions hold too, with timm's
meanings: ``num_features`` (pool5's channels), ``head_hidden_size`` (fc7's width), ``in_chans``,
``reset_classifier``, ``forward_intermediates``, ``prune_intermediate_layers``, ``feature_info``
(timm's list of dicts), ``pretrained_cfg`` / ``default_cfg``, the ``create_model`` keywords of
:func:`vggfeat.vgg` (those in :mod:`vggfeat.nets.timm_conventions`), ``features_only`` in
:mod:`vggfeat.nets.featuremaps`, TorchScript and torch.fx; timm's own ``tests/test_models.py``
passes for these nets wherever it passes for timm's VGG (``tests/test_timm_suite.py``).

Where timm's convention and the paper's geometry part, the paper's is kept: fc6 is a crop/32
kernel over the crop's whole pool5 map, so ``global_pool=""`` (timm's "no pooling") bypasses the
head and ``forward`` returns the pool5 map (timm's VGG returns its fc7 map, ``dense()(x, "fc7")``
here; see :func:`vggfeat.nets.timm_conventions.check_global_pool`); and ``in_chans`` is 3, the
RGB channels the weights' preprocessing is defined on.
"""

import math
from collections import OrderedDict

import torch
from torch import nn

from .featuremaps import intermediates, prune, stages
from .fully_conv import DenseVGG
from .preprocess import Preprocess
from .timm_conventions import TimmConfig, check_global_pool, pretrained_cfg

# Table 1 as data: five blocks, each a list of layers. An int is a 3x3 conv of that width, a
# tuple (k, width) a kxk conv, "LRN" AlexNet's local response normalisation. Every block ends in
# a 2x2 max-pool. "B-5x5" is the Sec. 4.1 control net: B with each pair of 3x3 convs replaced by
# one 5x5 conv of the same receptive field.
CONFIGS: dict[str, list[list]] = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "A-LRN": [[64, "LRN"], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "C": [[64, 64], [128, 128], [256, 256, (1, 256)], [512, 512, (1, 512)], [512, 512, (1, 512)]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
    "B-5x5": [[(5, 64)], [(5, 128)], [(5, 256)], [(5, 512)], [(5, 512)]],
}
# torchvision's builders for the configurations it has (used for weights and as test reference).
TORCHVISION_NAMES = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
PAPER_CROP = 224  # Sec. 3.1: the training crop; fc6 becomes a 7x7 conv over its 7x7 pool5 map
STRIDE = 32  # five 2x2 max-pools


def fc6_kernel(crop: int) -> int:
    """Sec. 3.2: fc6 covers the pool5 map of the training crop, c/32 (7 at the paper's 224)."""
    if not isinstance(crop, int) or crop < STRIDE or crop % STRIDE:
        raise ValueError(
            f"crop={crop!r}: the training crop must be a positive multiple of {STRIDE} (five 2x2 "
            f"poolings; fc6's kernel is crop/{STRIDE}), e.g. 64, 96, 128 or the paper's 224"
        )
    return crop // STRIDE


@torch.fx.wrap  # a leaf for torch.fx (a size check is control flow), as timm marks its ConvMlp
def check_pool5(x: torch.Tensor, kernel: int, crop: int, config: str) -> torch.Tensor:
    """``x``, the (adaptively pooled) pool5 map, if it is fc6's ``kernel`` x ``kernel``."""
    if x.shape[-2] != kernel or x.shape[-1] != kernel:
        side = x.shape[-1] * 32  # STRIDE, written out: TorchScript reads no module-level int
        raise ValueError(
            f"VGG-{config} built for {crop}x{crop} crops got a {x.shape[-2]}x{x.shape[-1]} pool5 map "
            f"(input about {side} px): forward() takes {crop}x{crop} crops; use "
            f"model.dense() for whole images at any size >= {crop}"
        )
    return x


def paper_scale(crop: int, size: float) -> int:
    """A scale of the paper (S or Q, in pixels at crop 224) kept in the same ratio to ``crop``."""
    return int(round(size * crop / PAPER_CROP))


def paper_scales(crop: int, qs=(256, 384, 512)) -> tuple[int, ...]:
    """The paper's test scales Q (Sec. 3.2, jittered training: 256, 384, 512) for a net trained
    at crop ``crop``: 73, 110, 146 at crop 64; the paper's values at 224."""
    return tuple(paper_scale(crop, q) for q in qs)


def canonical_config(config: str) -> str:
    key = {k.upper(): k for k in CONFIGS}.get(str(config).upper().replace("_", "-"))
    if key is None:
        raise ValueError(f"unknown VGG configuration {config!r}; choose one of {sorted(CONFIGS)}")
    return key


def scaled(width: int, factor: float) -> int:
    return max(1, int(round(width * factor)))


class VGG(TimmConfig, nn.Module):
    """A Table-1 network in torchvision's layout.

    ``forward`` equals torchvision's VGG (adaptive 7x7 pool, flatten, classifier) so logits match
    it exactly; ``dense()`` gives the Sec. 3.2 fully-convolutional net for whole-image evaluation.
    ``layers`` maps layer names (``conv1_1`` ... ``pool5``, ``fc6``, ``fc7``, ``fc8``) to where
    their (post-ReLU) output is produced: ``("features", i)`` = output of ``features[i]``.

    ``forward`` scripts with TorchScript and traces with torch.fx (torchvision's
    ``create_feature_extractor`` takes the node names of torchvision's VGG: ``features.N``,
    ``avgpool``, ``classifier.N``).
    """

    # properties TorchScript must not compile: they read Python-side state, not forward's
    __jit_unused_properties__ = ["num_classes", "num_features", "head_hidden_size", "default_cfg"]

    def __init__(
        self,
        config: str = "D",
        *,
        num_classes: int = 1000,
        width: float = 1.0,
        fc_dim: int = 4096,
        dropout: float = 0.5,
        batch_norm: bool = False,
        init: str = "glorot",
        std: float = 0.01,
        crop: int = PAPER_CROP,
        preprocess: Preprocess | None = None,
        global_pool: str = "avg",
    ):
        super().__init__()
        if isinstance(width, bool) or not width > 0:
            raise ValueError(f"width {width}: the channel multiplier must be above 0 (1: the paper's net)")
        if isinstance(fc_dim, bool) or int(fc_dim) != fc_dim or fc_dim < 1:
            raise ValueError(f"fc_dim {fc_dim}: must be a whole number of at least 1 (4096: the paper's)")
        self.global_pool = check_global_pool(global_pool)
        self.in_chans = 3  # timm's attribute; RGB (the weights' preprocessing is per RGB channel)
        self.config = canonical_config(config)
        self.kernel = fc6_kernel(crop)
        self.crop = crop
        self.arch = dict(
            config=self.config,
            num_classes=num_classes,
            width=width,
            fc_dim=fc_dim,
            batch_norm=batch_norm,
            crop=crop,
        )
        self.layers: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.features = self._make_features(width, batch_norm)
        # torchvision's adaptive pool (the identity on a 224 input) keeps its checkpoints loading
        # and its forward on other sizes; a net for another crop has none, so nothing is stretched.
        k = self.kernel
        self.avgpool = nn.AdaptiveAvgPool2d((k, k)) if crop == PAPER_CROP else nn.Identity()
        c5 = self.out_channels
        self.classifier = nn.Sequential(
            nn.Linear(c5 * k * k, fc_dim),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(True),
            nn.Dropout(dropout),
            _fc8(fc_dim, num_classes),
        )
        self.layers.update(fc6=("classifier", 1), fc7=("classifier", 4))
        if num_classes:
            self.layers["fc8"] = ("classifier", 6)
        # timm's list of the six stage outputs, recorded while building: pruning keeps the indices
        self.feature_info = stages(self)
        self.preprocess = preprocess or Preprocess.imagenet()
        self.meta: dict = {}  # class names, provenance, ... of loaded weights
        self.pretrained_cfg = pretrained_cfg(self)
        self.reset_parameters(init, std=std)

    def _make_features(self, width: float, batch_norm: bool) -> nn.Sequential:
        mods: list[nn.Module] = []
        cin = 3
        for b, block in enumerate(CONFIGS[self.config], start=1):
            n = 0
            for spec in block:
                if spec == "LRN":  # Sec. 2.3: AlexNet's LRN parameters
                    mods.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
                    self.layers[f"norm{b}"] = ("features", len(mods) - 1)
                    continue
                k, cout = spec if isinstance(spec, tuple) else (3, spec)
                cout = scaled(cout, width)
                mods.append(nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2))
                if batch_norm:
                    mods.append(nn.BatchNorm2d(cout))
                mods.append(nn.ReLU(inplace=True))
                n += 1
                self.layers[f"conv{b}_{n}"] = ("features", len(mods) - 1)
                cin = cout
            mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.layers[f"pool{b}"] = ("features", len(mods) - 1)
        self.out_channels = cin
        return nn.Sequential(*mods)

    def reset_parameters(self, init: str = "glorot", *, std: float = 0.01) -> None:
        """Sec. 3.1 initialisation, biases zero.

        ``"glorot"``: Glorot & Bengio (2010) uniform, which the authors found after submission to
        train deep nets without pre-training. ``"glorot-relu"``: the same with the gain
        sqrt(2) that keeps the activations' variance through a ReLU (He et al., 2015) on every
        layer a ReLU follows, plain Glorot on fc8: without batch norm, plain Glorot halves the
        variance at each of the 11-19 layers and a net barely moves from chance. ``"normal"``:
        N(0, std^2). The paper writes "variance 1e-2" (std 0.1); most re-implementations read it
        as std 1e-2, our default: pass ``std=0.1`` for the literal reading.
        """
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                _init_weights(mod, init, std, relu=mod is not self.classifier[6])
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    @property
    def num_classes(self) -> int:
        return getattr(self.get_classifier(), "out_features", 0)

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output, the pool5 map (timm's meaning: 512 for
        the paper's nets; the last kept map's after ``prune_intermediate_layers``)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels

    @property
    def head_hidden_size(self) -> int:
        """Width of fc7, the pre-logits features ``forward_head(pre_logits=True)`` returns and the
        descriptor of appendix B (timm's meaning: 4096 for the paper's nets); ``num_features``
        where the head is bypassed (``global_pool=""``) or pruned."""
        return self.num_features if self.global_pool == "" else self.classifier[3].out_features

    def get_classifier(self) -> nn.Module:
        return self.classifier[6] if len(self.classifier) else nn.Identity()

    def reset_classifier(
        self, num_classes: int, global_pool: str | None = None, *, init: str = "glorot", std: float = 0.01
    ) -> None:
        """A fresh fc8 for ``num_classes`` classes (Sec. 3.1 init, biases zero), every other layer
        kept, in the model's train/eval mode, device and dtype (and trainable, as timm's new
        head is, so freezing the net first leaves only fc8 to train); 0 removes fc8, so ``forward``
        returns fc7 (timm's convention). ``global_pool``: timm's argument, None keeps the current
        one; ``"avg"`` (what forward does) or ``""`` (forward returns the unpooled pool5 map), see
        :func:`vggfeat.nets.timm_conventions.check_global_pool`."""
        pool = self.global_pool if global_pool is None else check_global_pool(global_pool)
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no fc8), got {num_classes!r}")
        if not len(self.classifier):
            if num_classes or pool:
                raise ValueError(
                    "prune_intermediate_layers removed this net's head (fc6, fc7, fc8); build the "
                    "net again (vggfeat.vgg) for a classifier"
                )
            return
        self.global_pool = pool
        w = self.classifier[3].weight
        head = _fc8(self.classifier[3].out_features, num_classes).to(w.device, w.dtype)
        if num_classes:
            _init_weights(head, init, std)
            self.layers["fc8"] = ("classifier", 6)
        else:
            self.layers.pop("fc8", None)
        self.classifier[6] = head.train(self.training)
        self.arch = {**self.arch, "num_classes": num_classes}
        self.meta.pop("categories", None)  # the old class names no longer describe the outputs

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """timm's pruning for ``forward_intermediates(indices=...)``: the conv part ends at the
        deepest stage in ``indices`` (stage indices as in ``feature_info``; an int k, the last k),
        and the head (fc6, fc7, fc8) goes too if ``prune_head`` or if pool5 was cut; ``forward``
        then returns the last kept map. ``prune_norm`` has no effect (no final norm, as in timm's
        VGG). Returns the kept stage indices counted from the start."""
        return prune(self, indices, prune_head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed images -> (N, C5, H/32, W/32) pool5 map."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """pool5 map -> (N, num_classes) logits, or (N, fc_dim) post-ReLU fc7 if ``pre_logits``;
        the pool5 map itself with ``global_pool=""`` or a pruned head."""
        if self.global_pool == "":
            return x
        x = self.avgpool(x)
        x = check_pool5(x, self.kernel, self.crop, self.config)
        x = torch.flatten(x, 1)
        c = self.classifier  # by index, not classifier[:6]: TorchScript slices a Sequential to a tuple
        x = c[5](c[4](c[3](c[2](c[1](c[0](x))))))
        return x if pre_logits else c[6](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes) logits, exactly torchvision's VGG at any size.

        At sizes other than the training crop (224), torchvision's adaptive pool averages the
        pool5 map to 7x7 before fc6, and timm's VGG gives other logits: timm runs fc6/fc7 as
        convolutions over the whole map and averages the fc7 map (max difference 0.87 at
        300x200 with the same weights). For timm's fully-convolutional result use
        ``model.dense()(x).mean((2, 3))``, the Sec. 3.2 dense evaluation; it equals timm's output
        wherever both sides are at least the crop (timm also stretches a pool5 side shorter
        than 7 to 7, where ``dense()`` refuses the input).
        """
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices=None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's ``forward_intermediates``: ``(final, [maps])``, the maps at ``indices`` (timm's
        stages 0..5 as in ``feature_info``: None all, an int n the last n, a sequence of indices,
        or our layer names) in forward order, and ``final`` the ``forward_features`` output (the
        conv part's output where it stopped if ``stop_early``). ``norm`` has no effect (no final
        norm layer, as in timm's VGG); ``intermediates_only`` returns the maps alone."""
        return intermediates(self, x, indices, stop_early, output_fmt, intermediates_only)

    def dense(self) -> DenseVGG:
        """The fully-convolutional network of Sec. 3.2, sharing this model's parameters."""
        return DenseVGG(self)


INITS = ("glorot", "glorot-relu", "normal")


def _init_weights(mod: nn.Module, init: str, std: float, relu: bool = False) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if init.startswith("glorot"):
        gain = nn.init.calculate_gain("relu") if init == "glorot-relu" and relu else 1.0
        nn.init.xavier_uniform_(mod.weight, gain=gain)
    else:
        nn.init.normal_(mod.weight, 0.0, std)
    nn.init.zeros_(mod.bias)


def _fc8(fc_dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(fc_dim, num_classes) if num_classes else nn.Identity()


def conv_module(model: VGG, name: str) -> nn.Conv2d:
    """The Conv2d behind a conv layer name such as ``"conv3_2"``."""
    part, idx = model.layers[name]
    while not isinstance(model.features[idx], nn.Conv2d):
        idx -= 1
    return model.features[idx]


def init_from(shallow: VGG, deep: VGG) -> VGG:
    """Sec. 3.1: initialise ``deep`` with the first four conv layers and the three FC layers of
    the shallower net A ``shallow``; the rest keeps its random init. Returns ``deep``.

    Layers are matched by name, as Caffe copies weights: A's first four convs are conv1_1,
    conv2_1, conv3_1 and conv3_2, and they land on the deep net's layers of the same names
    (whose shapes agree), not on its first four convs (conv1_2 has no counterpart in A).
    """
    names = [n for n in shallow.layers if n.startswith("conv")][:4]
    missing = [n for n in names if n not in deep.layers]
    if len(names) < 4 or missing:
        raise ValueError(f"init_from: the deep net has no layers {missing} of the shallow net")
    pairs = [(n, conv_module(shallow, n), conv_module(deep, n)) for n in names]
    pairs += [(f"classifier.{i}", shallow.classifier[i], deep.classifier[i]) for i in (0, 3, 6)]
    for name, a, b in pairs:
        if a.weight.shape != b.weight.shape:
            raise ValueError(
                f"init_from: {name} has shape {tuple(a.weight.shape)} in the shallow net but "
                f"{tuple(b.weight.shape)} in the deep net; build both with the same width, "
                "fc_dim and num_classes"
            )
    with torch.no_grad():
        for _, a, b in pairs:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    return deep


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
