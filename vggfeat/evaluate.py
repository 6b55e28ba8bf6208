"""The public path `vggfeat.evaluate`: the module :mod:`vggfeat.evaluation.posteriors` under a second name."""

import sys

from .evaluation import posteriors as _module

sys.modules[__name__] = _module
