"""``python -m vggfeat.demo``: see :mod:`vggfeat.demo`."""

from . import main

main()
