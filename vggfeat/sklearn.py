"""The public path `vggfeat.sklearn`: the module :mod:`vggfeat.features.sklearn` under a second name."""

import sys

from .features import sklearn as _module

sys.modules[__name__] = _module
