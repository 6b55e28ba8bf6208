"""The public path `vggfeat.evaluate`: the module :mod:`vggfeat.evaluation.ilsvrc` under a second name."""

import sys

from .evaluation import ilsvrc as _module

sys.modules[__name__] = _module
