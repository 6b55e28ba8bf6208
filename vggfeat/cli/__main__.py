"""``python -m vggfeat.cli``: the ``vggfeat`` command."""

import sys

from .command import main

sys.exit(main())
