"""The public path `vggfeat.hf`: the module :mod:`vggfeat.features.hf` under a second name."""

import sys

from .features import hf as _module

sys.modules[__name__] = _module
