"""The library's own exception, at the bottom of the import graph so every module can raise it."""


class WeightsError(ValueError):
    """A weights file or name that cannot be used; the message says which and why."""
