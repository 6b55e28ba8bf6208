"""The input convention a set of weights was trained with; it travels with the weights.

Images enter the library as float RGB in [0, 1]; :meth:`Preprocess.apply` turns them into what
the weights expect: channel order, value range, then ``(x - mean) / std`` with mean and std given
in that order and range. Nothing else in vggfeat knows a mean or a std.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import asdict, dataclass

import torch
from torchvision.models import VGG16_Weights


@dataclass(frozen=True)
class Preprocess:
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    value_range: float = 1.0  # 1.0: pixels in [0, 1]; 255.0: pixels in [0, 255] (Caffe)
    channel_order: str = "RGB"  # order of the input channels and of mean/std
    name: str = "custom"

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three values, one per channel")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float RGB in [0, 1] -> network input."""
        if self.channel_order == "BGR":
            x = x.flip(-3)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        # (x * r - m) / s written as one affine map
        return x * (self.value_range / std) - mean / std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            mean=tuple(d["mean"]),
            std=tuple(d.get("std", (1.0, 1.0, 1.0))),
            value_range=float(d.get("value_range", 1.0)),
            channel_order=d.get("channel_order", "RGB"),
            name=d.get("name", "custom"),
        )

    @classmethod
    def from_torchvision(cls, weights_enum) -> Preprocess:
        """The mean/std a torchvision weights enum member states in its transforms."""
        tf = weights_enum.transforms
        kw = dict(tf.keywords) if isinstance(tf, functools.partial) else {}
        target = tf.func if isinstance(tf, functools.partial) else tf
        defaults = {k: p.default for k, p in inspect.signature(target).parameters.items()}
        return cls(
            mean=tuple(kw.get("mean", defaults["mean"])),
            std=tuple(kw.get("std", defaults["std"])),
            value_range=1.0,
            channel_order="RGB",
            name=f"torchvision:{weights_enum.name}",
        )

    @classmethod
    def imagenet(cls) -> Preprocess:
        """torchvision's ImageNet normalisation (bare state dicts, untrained models)."""

        return cls.from_torchvision(VGG16_Weights.IMAGENET1K_V1)._replace_name("imagenet")

    @classmethod
    def caffe(cls) -> Preprocess:
        """The original Caffe release: BGR, 0-255, mean pixel subtracted (the release's notes)."""
        return cls(
            mean=(103.939, 116.779, 123.68),
            std=(1.0, 1.0, 1.0),
            value_range=255.0,
            channel_order="BGR",
            name="caffe",
        )

    @classmethod
    def mean_rgb(cls, mean: tuple[float, float, float]) -> Preprocess:
        """Sec. 2.1: subtract the training set's mean RGB (given in [0, 1]); no scaling."""
        return cls(mean=tuple(float(m) for m in mean), name="mean-rgb")

    @classmethod
    def named(cls, name: str) -> Preprocess:
        table = {"imagenet": cls.imagenet, "caffe": cls.caffe}
        if name not in table:
            raise ValueError(
                f"unknown preprocessing {name!r}; choose one of {sorted(table)} or pass a vggfeat.Preprocess"
            )
        return table[name]()

    def _replace_name(self, name: str) -> Preprocess:
        return Preprocess(self.mean, self.std, self.value_range, self.channel_order, name)
