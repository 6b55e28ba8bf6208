"""Which rank am I: the process helpers shared by the engine, the extractor, the CLI and the scripts.

Under ``accelerate launch`` (or ``torchrun``) every process runs the same code. Accelerate's
``PartialState`` tells each one its rank (``process_index``), the number of ranks
(``num_processes``), whether it is the main one, and its device, and it offers a barrier
(``wait_for_everyone``); on one process it says rank 0 of 1, so the same code runs unlaunched.
On CPU, ``PartialState()`` under ``torchrun`` stays single-process unless created with
``cpu=True``: :func:`process_state` passes it when ``ACCELERATE_USE_CPU=1`` is set or there is no
GPU, so that CPU ranks form their gloo group (docs/architecture.md).

Every import of accelerate is local to the function using it: the command line's ``--help``
does not pay for it.
"""

from __future__ import annotations

import atexit

import torch
import torch.distributed as dist

from ..data.identity import image_keys


def process_state():
    """accelerate's process state. Under torchrun on CPU, accelerate only forms the gloo group
    when told it runs on CPU (``ACCELERATE_USE_CPU=1``, or no GPU here). A process that joins a
    group leaves it cleanly at exit (:func:`_leave_group`)."""

    from accelerate import PartialState  # deferred: accelerate adds to start-up
    from accelerate.utils import parse_flag_from_env  # deferred: accelerate adds to start-up

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes > 1 and not _LEAVING:
        _LEAVING.append(True)
        atexit.register(_leave_group)
    return state


_LEAVING: list = []  # the exit hook is registered once per process


def _leave_group() -> None:
    # A gloo rank that exits with its process group still up can abort in the C++ teardown
    # ("terminate called without an active exception", SIGABRT), failing a run whose work is
    # done; destroying the group first exits cleanly.

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous shard of [0, n) for ``rank``: concatenating shards in rank order is the input."""
    per = -(-n // world) if world > 1 else n
    return min(n, rank * per), min(n, (rank + 1) * per)


def from_main(state, fn):
    """``fn()`` computed by the main process and given to every rank."""
    if state.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list  # deferred: accelerate adds to start-up

    box = [fn() if state.is_main_process else None]
    broadcast_object_list(box)
    return box[0]


def gather_keys(source, keys, state) -> list[str]:
    """Every image's key, each rank hashing its shard (the image bytes are read once)."""

    if state.num_processes == 1:
        return image_keys(source, keys)
    from accelerate.utils import gather_object  # deferred: accelerate adds to start-up

    lo, hi = shard(len(source), state.process_index, state.num_processes)
    parts = sorted(gather_object([(lo, image_keys(source, keys, lo, hi))]), key=lambda p: p[0])
    return [key for _, part in parts for key in part]


def is_main_process() -> bool:
    """Whether this process writes outputs: under ``accelerate launch`` every process runs the
    same command and computes its shard, and only the main one writes files and prints."""
    return process_state().is_main_process


def on_main_process(fn, *args) -> None:
    """``fn(*args)`` on the main process only, the others waiting for it: a download into a
    folder every process then reads."""
    state = process_state()
    if state.is_main_process:
        fn(*args)
    state.wait_for_everyone()
