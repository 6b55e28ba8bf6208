"""The command line: the ``vggfeat`` command (``command``, with ``extract`` its largest
sub-command) and the options the benchmark scripts share (``common``; ``svm`` for the SVM
scripts, apart because it needs scikit-learn)."""

from .command import main

__all__ = ["main"]
