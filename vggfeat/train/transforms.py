"""Sec. 3.1 training augmentation as torchvision v2 transforms, and per-sample random streams.

Training input: the image isotropically rescaled so its smallest side is S (fixed, or drawn per
image from [Smin, Smax]: scale jittering), one random ``crop_size`` crop, a random horizontal
flip, and AlexNet's PCA colour shift. Validation: smallest side Q, centre crop. The mean-RGB
subtraction is the model's :class:`vggfeat.Preprocess` (applied to the batch on the device), so
the transforms stop at float RGB in [0, 1] (plus the colour shift, which may leave that range).

Randomness: every random draw of these transforms comes from torch's global CPU generator, and
:func:`sample_rng` seeds that generator from (seed, epoch, sample index) around one sample. The
augmentation of a sample is then the same whichever process, DataLoader worker or resumed run
computes it, which is what makes 1 process with batch 2b equal 2 processes with batch b, and a
resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# AlexNet's PCA of ImageNet RGB pixel values, on [0, 1] RGB (the eigenvalues of the 0-255
# covariance divided by 255; the values every re-implementation uses, e.g. fb.resnet.torch).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class ScaleJitter(v2.Transform):
    """Sec. 3.1 multi-scale training: isotropically rescale so the smallest side is S, with S
    drawn uniformly from the integers in [smin, smax] once per image (bilinear, antialiased: the
    same resize as :func:`vggfeat.data.decode.rescale`)."""

    def __init__(self, smin: int, smax: int):
        super().__init__()
        if not 0 < smin <= smax:
            raise ValueError(f"scale jitter needs 0 < smin <= smax, got [{smin}, {smax}]")
        self.smin, self.smax = int(smin), int(smax)

    def make_params(self, flat_inputs: list) -> dict:
        return {"size": int(torch.randint(self.smin, self.smax + 1, ()).item())}

    def transform(self, inpt, params: dict):
        return self._call_kernel(F.resize, inpt, size=[params["size"]], antialias=True)


class PCALighting(v2.Transform):
    """AlexNet's "random RGB colour shift" (Krizhevsky et al. 2012, Sec. 4.1), used by Sec. 3.1.

    Per image, alpha ~ N(0, std^2) per principal direction; every pixel gets the same shift
    ``eigvec @ (alpha * eigval)`` (``eigvec`` columns are the eigenvectors). Works on float images
    in [0, 1]; the result is not clipped, as in AlexNet.
    """

    def __init__(
        self,
        std: float = 0.1,
        *,
        eigval: Sequence[float] = IMAGENET_EIGVAL,
        eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
    ):
        super().__init__()
        self.std = float(std)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError("PCA lighting needs 3 eigenvalues and a 3x3 eigenvector matrix")

    def make_params(self, flat_inputs: list) -> dict:
        alpha = torch.randn(3) * self.std
        return {"shift": self.eigvec @ (alpha * self.eigval)}

    def transform(self, inpt, params: dict):
        if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints)):
            return inpt
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            raise TypeError(
                "PCALighting needs a float image tensor in [0, 1]; put "
                "vggfeat.train.transforms.UnitRange() before it"
            )
        shift = params["shift"].to(inpt.dtype).view(3, 1, 1)
        out = inpt + shift
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class UnitRange(v2.Transform):
    """uint8 image -> float32 in [0, 1] as ``x / 255``, the exact conversion of
    :func:`vggfeat.data.decode.rescale` (v2.ToDtype multiplies by 1/255, which differs in the last bit)."""

    _transformed_types = (tv_tensors.Image, torch.Tensor)

    def transform(self, inpt, params: dict):
        out = inpt.to(torch.float32).div(255) if inpt.dtype == torch.uint8 else inpt.to(torch.float32)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def train_transform(
    *,
    crop_size: int = 224,
    scale: int | tuple[int, int] = 256,
    flip: bool = True,
    lighting: float = 0.1,
    eigval: Sequence[float] = IMAGENET_EIGVAL,
    eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC,
) -> v2.Compose:
    """RGB PIL image -> (3, crop_size, crop_size) float32 tensor (Sec. 3.1 augmentation).

    ``scale``: S (int) or (Smin, Smax) for scale jittering. ``lighting``: std of the PCA colour
    shift (0 turns it off). Not torchvision's RandomResizedCrop, which also changes aspect ratio
    and crop area: the paper crops a fixed-size patch from the isotropically rescaled image.
    """
    smin, smax = (scale, scale) if isinstance(scale, int) else tuple(scale)
    if crop_size > smin:
        raise ValueError(f"crop_size {crop_size} is larger than the smallest training scale S={smin}")
    resize = v2.Resize(smin, antialias=True) if smin == smax else ScaleJitter(smin, smax)
    steps = [v2.ToImage(), resize, v2.RandomCrop(crop_size)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps.append(UnitRange())
    if lighting > 0:
        steps.append(PCALighting(lighting, eigval=eigval, eigvec=eigvec))
    return v2.Compose(steps)


def eval_transform(*, crop_size: int = 224, scale: int = 256) -> v2.Compose:
    """RGB PIL image -> (3, crop_size, crop_size) float32: smallest side to Q=``scale``, centre
    crop (the single-crop validation used to schedule the learning rate)."""
    if crop_size > scale:
        raise ValueError(f"crop_size {crop_size} is larger than the validation scale Q={scale}")
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(scale, antialias=True),
            v2.CenterCrop(crop_size),
            UnitRange(),
        ]
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


@contextlib.contextmanager
def sample_rng(seed: int, epoch: int, index: int):
    """Run the body with torch's CPU generator seeded for (seed, epoch, index), then restore it.

    Only the CPU generator is touched (``torch.manual_seed`` would also reseed CUDA), so the
    caller's dropout stream and any other random state are unaffected.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(sample_seed(seed, epoch, index))
        yield
