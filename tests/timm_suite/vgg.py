"""timm registry entries for vggfeat's nets, for running timm's own model tests against them.

Each entry only forwards its keywords to :func:`vggfeat.vgg`; nothing is adapted here. The
module is named ``vgg`` because timm's tests pick the model families that implement
``forward_intermediates`` by module name (``FEAT_INTER_FILTERS`` lists ``"vgg"``), and vggfeat's
nets claim that support. The pretrained tag ``tv_in1k`` is the truth: ``pretrained=True`` means
``weights="default"``, torchvision's IMAGENET1K_V1, the file timm's ``vgg*.tv_in1k`` also holds.

``VGGFEAT_TIMM_NAMES=timm`` registers the entries under timm's own names (``vgg11``, ...),
overwriting timm's, for the tests that list timm's names literally.
"""

import os

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

import vggfeat

ARCHS = ("vgg11", "vgg16", "vgg19_bn")
PREFIX = "" if os.environ.get("VGGFEAT_TIMM_NAMES") == "timm" else "vggfeat_"


def _cfg(**kw):
    return dict(
        url="https://download.pytorch.org/models/",  # the weights come from torchvision's hub
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,
        interpolation="bilinear",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="features.0",
        classifier="classifier.6",
        **kw,
    )


default_cfgs = generate_default_cfgs({f"{PREFIX}{a}.tv_in1k": _cfg() for a in ARCHS})


def _entry(arch):
    def fn(pretrained=False, **kwargs):
        return vggfeat.vgg(arch, pretrained=pretrained, **kwargs)

    fn.__name__ = fn.__qualname__ = PREFIX + arch
    fn.__module__ = __name__
    return register_model(fn)


for _arch in ARCHS:
    globals()[PREFIX + _arch] = _entry(_arch)
