"""vggfeat: the VGG networks of Simonyan & Zisserman (arXiv:1409.1556) as transfer-learning
features: Table-1 networks, dense multi-scale evaluation, the appendix-B descriptor."""

import logging

from .errors import WeightsError
from .features.extract import Extractor, extract
from .nets.featuremaps import FeatureInfo, FeatureMaps
from .nets.fully_conv import DenseVGG
from .nets.models import CONFIGS, VGG, count_parameters, init_from, paper_scales
from .nets.preprocess import Preprocess
from .weights.loader import fingerprint, load_weights, save_weights, vgg

logging.getLogger("vggfeat").addHandler(logging.NullHandler())

__all__ = [
    "CONFIGS",
    "VGG",
    "DenseVGG",
    "Extractor",
    "FeatureInfo",
    "FeatureMaps",
    "Preprocess",
    "WeightsError",
    "count_parameters",
    "extract",
    "fingerprint",
    "init_from",
    "load_weights",
    "paper_scales",
    "save_weights",
    "vgg",
]
__version__ = "0.1.0"  # the one declaration: pyproject.toml reads it
