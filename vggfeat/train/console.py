"""What a training run shows on the console: log lines that never glue onto the progress bar,
Accelerate's per-checkpoint INFO lines left out, and one line when the run is interrupted.

- ``tqdm``'s bar ends with a carriage return, not a newline; a log line written after it would
  continue the bar's line (in a terminal, and in a log file read with ``cat``). Inside
  :func:`console`, the root logger's stream handlers write through ``tqdm.write``, which clears
  the bar first and redraws it below the message.
- ``accelerator.save_state`` / ``load_state`` log six INFO lines per checkpoint. They are left
  out by setting the ``accelerate`` logger to WARNING for the run, unless that logger has a
  level already (``ACCELERATE_LOG_LEVEL=INFO`` sets one on its child loggers, which then wins).
- Ctrl-C (SIGINT, sent by the terminal to every process of ``accelerate launch``) becomes
  :class:`Interrupted`, whose message says where the run stopped and how to continue; scripts
  print it once (main process) and exit with status 130, without a traceback per process.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .checkpoint import latest_checkpoint


class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); ``str(e)`` says where, and how to resume."""


@contextlib.contextmanager
def console():
    """Log lines above the progress bar, and Accelerate's checkpoint INFO lines left out."""
    from tqdm.contrib.logging import logging_redirect_tqdm  # deferred: rarely needed

    acc = logging.getLogger("accelerate")
    quiet = acc.level == logging.NOTSET
    if quiet:
        acc.setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        if quiet:
            acc.setLevel(logging.NOTSET)


def interrupted(*, epoch_steps: int, step: int, epochs: int, checkpoints: Path) -> Interrupted:
    """The exception that says where a run stopped: its epoch (counted from 0, as the log's
    ``epoch N:`` lines are), the optimiser step, and the checkpoint ``--resume`` continues from."""
    epoch, within = divmod(step, max(epoch_steps, 1))
    if step and not within:  # stopped after an epoch's last step, in its validation or checkpoint
        epoch, within = epoch - 1, epoch_steps
    ckpt = latest_checkpoint(checkpoints)
    since = f"continues from {ckpt.name}" if ckpt else "starts over: no checkpoint was written yet"
    return Interrupted(
        f"interrupted at epoch {epoch} of {epochs}, step {within} of {epoch_steps} in it (step {step} "
        f"overall); the same command with --resume {since}"
    )
