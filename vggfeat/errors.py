"""Every exception of the library, at the bottom of the import graph so that every module can raise
them and every caller can catch them from one place."""

from __future__ import annotations


class WeightsError(ValueError):
    """A weights file or name that cannot be used; the message says which and why."""


class ConfigMismatch(WeightsError):
    """Weights of another configuration than the one asked for; :meth:`naming` says it in the
    words of the interface the user called (``config=``, ``model=``, ``--model``)."""

    def __init__(self, source: str, held: str, asked: str, argument: str = "config"):
        self.source, self.held, self.asked, self.argument = source, held, asked, argument
        fix = f"{argument} {held}" if argument.startswith("--") else f"{argument}={held!r}"
        super().__init__(
            f"weights {source} are for VGG-{held}, not VGG-{asked}; pass {fix} or leave {argument} "
            "out (the weights say which net they hold)"
        )

    def naming(self, argument: str) -> ConfigMismatch:
        return ConfigMismatch(self.source, self.held, self.asked, argument)


class StoreBusy(ValueError):
    """A store that a process is writing or compacting now; the message names the process."""


class RunLocked(RuntimeError):
    """The run folder is used by a live run; the message names it."""


class ConfigError(ValueError):
    """An option that cannot work, found before any data is read; the message names the option."""


class VOCError(FileNotFoundError):
    """VOC data missing or malformed; the message shows the expected layout."""


class CaltechError(FileNotFoundError):
    """Caltech data missing or too small for the protocol; the message says what to do."""


class ImageError(ValueError):
    """An input that cannot be decoded; the message names it and says why."""


class DataError(ValueError):
    """``--data`` is not a layout the trainer reads; the message says which layouts it reads."""


class OutputError(ValueError):
    """An output that cannot be written (a read-only folder, a full disk, an output that is an
    input); the message names the path and what to do. The previous output is left as it was."""


class RandomWeightsWarning(UserWarning):
    """Descriptors of a net with random weights: a baseline, not ImageNet features."""


class GlobalPoolError(ValueError, AssertionError):
    """A ``global_pool`` VGG has no meaning for. An AssertionError too, because timm's models
    refuse a pooling they cannot take with one (and timm's tests expect it)."""
