"""Sec. 3.2's fully-convolutional view of a Table-1 network, for whole-image (dense) evaluation.

:class:`DenseVGG` holds no weights of its own: fc6, fc7 and fc8 run as convolutions whose kernels
are views of the parent :class:`vggfeat.nets.models.VGG`'s Linear weights, so the two stay one network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# fc6 as a GEMM on its 7x7 patches up to this many output positions per call (full-width D:
# 25088 floats each, about 100 MB); beyond, the convolution, whose weight reorder is amortised
IM2COL_POSITIONS = 1024


class DenseVGG(nn.Module):
    """Sec. 3.2: fc6 as a 7x7 conv (c/32 for a net trained at crop c), fc7 and fc8 as 1x1 convs,
    applied to the uncropped image.

    The conv kernels are views of the parent's Linear weights taken at every call, so changing the
    parent's weights changes this network. Dropout is an inference no-op and is left out.
    ``forward(x, layer=...)`` stops at a named layer and returns its (post-ReLU) map.
    """

    def __init__(self, model: nn.Module):
        """``model``: the :class:`vggfeat.nets.models.VGG` whose weights this view shares."""
        super().__init__()
        # the parent's modules themselves, so a later reset_classifier() shows here too
        self.features, self.classifier = model.features, model.classifier
        self.layers = model.layers
        self.in_channels = model.out_channels
        self.config = model.config
        self.crop, self.kernel = model.crop, model.kernel
        self.preprocess = model.preprocess

    fc6 = property(lambda self: self.classifier[0])
    fc7 = property(lambda self: self.classifier[3])
    fc8 = property(lambda self: self.classifier[6])

    def min_side(self, layer: str = "fc8") -> int:
        """Smallest input side that gives a non-empty map at ``layer``."""
        part, idx = self._where(layer)
        if part == "classifier":
            return self.crop
        pools = sum(isinstance(m, nn.MaxPool2d) for m in self.features[: idx + 1])
        return 2**pools

    def _where(self, layer: str) -> tuple[str, int]:
        if layer not in self.layers:
            raise ValueError(
                f"unknown layer {layer!r} for VGG-{self.config}; choose one of {list(self.layers)}"
            )
        return self.layers[layer]

    def output_size(self, height: int, width: int, layer: str = "fc8") -> tuple[int, int]:
        """Spatial size of the map at ``layer`` for an H x W input (floor at each pool)."""
        part, idx = self._where(layer)
        mods = self.features if part == "classifier" else self.features[: idx + 1]
        for m in mods:
            if isinstance(m, nn.MaxPool2d):
                height, width = height // 2, width // 2
        if part == "classifier":
            height, width = height - self.kernel + 1, width - self.kernel + 1
        return height, width

    def _fc6_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """fc6's weight as a 7x7 kernel in the input's memory format. A channels_last input with
        an NCHW kernel makes oneDNN reorder 100M weights on every call (2x slower on CPU), so a
        channels_last copy is kept, remade whenever the parent's weight changes (its version)."""
        w = self.fc6.weight
        kernel = w.view(-1, self.in_channels, self.kernel, self.kernel)
        if not x.is_contiguous(memory_format=torch.channels_last) or x.shape[-1] == 1:
            return kernel
        if torch.is_grad_enabled() and w.requires_grad:  # training through it: no cached copy
            return kernel.contiguous(memory_format=torch.channels_last)
        key = (w.data_ptr(), w._version, w.device, w.dtype, torch.is_inference_mode_enabled())
        if getattr(self, "_kernel_key", None) != key:
            self._kernel = kernel.contiguous(memory_format=torch.channels_last)
            self._kernel_key = key
        return self._kernel

    def _fc(self, x: torch.Tensor, fc: nn.Linear, k: int) -> torch.Tensor:
        """The Linear ``fc`` as a k x k convolution over ``x``. On a channels_last map it runs as
        a GEMM against the Linear weight itself (1x1: the map's (B, H, W, C) view; fc6: its 7x7
        patches, while they are at most ``IM2COL_POSITIONS`` output positions), the result a
        channels_last view: oneDNN's convolution reorders fc6's 100M weights on every call,
        which made fc6 2x slower than this GEMM at Q = 256 (fc7 ran on torch's slow im2col
        path), measured by benchmarks/extract_throughput.py's profile. Otherwise a convolution."""
        b, c, h, w = x.shape
        positions = b * (h - k + 1) * (w - k + 1)
        if x.is_contiguous(memory_format=torch.channels_last) and (k == 1 or positions <= IM2COL_POSITIONS):
            if k == 1:
                patches = x.permute(0, 2, 3, 1)
            else:  # (B, h', w', C, k, k): the order of the Linear weight's columns
                patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).flatten(3)
            return F.linear(patches, fc.weight, fc.bias).permute(0, 3, 1, 2)
        kernel = self._fc6_kernel(x) if fc is self.fc6 else fc.weight[:, :, None, None]
        return F.conv2d(x, kernel, fc.bias)

    def flops(self, height: int, width: int, layer: str = "fc8") -> int:
        """Multiply-adds x 2 of one forward pass on an H x W image up to ``layer`` (convs and
        FC-as-conv layers; ReLU, pooling and LRN are not counted)."""
        part, idx = self._where(layer)
        total, h, w = 0, height, width
        for m in self.features if part == "classifier" else self.features[: idx + 1]:
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0]
                total += 2 * m.in_channels * m.out_channels * k * k * h * w
            elif isinstance(m, nn.MaxPool2d):
                h, w = h // 2, w // 2
        if part == "classifier":
            h, w = h - self.kernel + 1, w - self.kernel + 1
            fcs = {1: [self.fc6], 4: [self.fc6, self.fc7], 6: [self.fc6, self.fc7, self.fc8]}[idx]
            total += sum(2 * fc.in_features * fc.out_features * h * w for fc in fcs)
        return total

    def forward(self, x: torch.Tensor, layer: str = "fc8") -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < self.min_side(layer):
            raise ValueError(
                f"input of {h}x{w} is too small for layer {layer!r}: both sides "
                f"must be at least {self.min_side(layer)} pixels"
            )
        return self.forward_layers(x, (layer,))[0]

    def forward_layers(self, x: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:
        """The maps at ``layers`` (in the order given) from one pass: the trunk runs up to the
        deepest one and each map is taken on the way."""
        for name in layers:
            self._where(name)  # an unknown name is refused with the net's list of names
        stops = {self.layers[n][1]: n for n in layers if self.layers[n][0] == "features"}
        head = [n for n in ("fc6", "fc7", "fc8") if n in layers]
        maps, start = {}, 0
        for idx in sorted(stops):
            x = maps[stops[idx]] = self.features[start : idx + 1](x)
            start = idx + 1
        if head:  # Sec. 3.2: the FC layers as convolutions
            x = self.features[start:](x)
            x = maps["fc6"] = F.relu(self._fc(x, self.fc6, self.kernel))
            if head[-1] != "fc6":
                x = maps["fc7"] = F.relu(self._fc(x, self.fc7, 1))
            if head[-1] == "fc8":
                maps["fc8"] = self._fc(x, self.fc8, 1)
        return [maps[n] for n in layers]
