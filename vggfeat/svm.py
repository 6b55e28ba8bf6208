"""The public path `vggfeat.svm`: the module :mod:`vggfeat.evaluation.svm` under a second name."""

import sys

from .evaluation import svm as _module

sys.modules[__name__] = _module
