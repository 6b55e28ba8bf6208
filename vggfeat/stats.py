"""The public path `vggfeat.stats`: the module :mod:`vggfeat.evaluation.stats` under a second name."""

import sys

from .evaluation import stats as _module

sys.modules[__name__] = _module
