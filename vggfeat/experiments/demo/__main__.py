"""``python -m vggfeat.experiments.demo``: see :mod:`vggfeat.experiments.demo`."""

from . import main

main()
