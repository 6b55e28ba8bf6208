"""The public path `vggfeat.toy`: the module :mod:`vggfeat.experiments.toy` under a second name."""

import sys

from .experiments import toy as _module

sys.modules[__name__] = _module
