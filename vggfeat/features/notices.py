"""Warnings that reach the user once, at the user's own line: past vggfeat's frames and those of
the libraries that call it on the user's behalf (scikit-learn, joblib, datasets)."""

from __future__ import annotations

import sys
import warnings

# Libraries that call vggfeat on a user's behalf: a warning points past them, at the user's line.
CALLERS = ("vggfeat", "sklearn", "joblib", "datasets", "multiprocess")

_SHOWN: set[tuple[str, str, int]] = set()  # (message, file, line) of the ``once`` warnings given


def warn_at_caller(message: str, category=UserWarning, *, once: bool = False) -> None:
    """``warnings.warn`` at the first frame outside vggfeat and the libraries that call it for the
    user (scikit-learn, joblib, datasets): the user's line. ``once``: at most once per message
    and line of the user's code, whatever the warning filters: scikit-learn resets them around
    every fit (``catch_warnings``), which would defeat Python's own once-per-line, and a grid
    search fits a clone per fold and candidate. No logging copy is made: it would print twice."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in CALLERS:
        frame, level = frame.f_back, level + 1
    key = (message, frame.f_code.co_filename, frame.f_lineno)
    if once and key in _SHOWN:
        return
    _SHOWN.add(key)
    warnings.warn(message, category, stacklevel=level)
