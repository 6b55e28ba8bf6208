"""A dense pass's activation memory, estimated before the pass: the largest conv input plus
output, float32, times 2 with the flip, at each Q. An image above ``MAX_ACTIVATION_BYTES``
(4 GiB; ``max_activation_bytes=`` or the environment variable
``VGGFEAT_MAX_ACTIVATION_BYTES`` override it) is refused before it is rescaled."""

from __future__ import annotations

import os

import torch

MAX_ACTIVATION_BYTES = 4 << 30  # a dense pass's activations per image (module docstring)


def activation_limit(given: int | None = None) -> int:
    """The memory bound of one image's dense pass: ``given``, else $VGGFEAT_MAX_ACTIVATION_BYTES,
    else ``MAX_ACTIVATION_BYTES``."""
    if given is not None:
        return int(given)
    env = os.environ.get("VGGFEAT_MAX_ACTIVATION_BYTES", "")
    return int(env) if env.isdigit() else MAX_ACTIVATION_BYTES


def conv_plan(net) -> list[tuple[int, int, int]]:
    """(in channels, out channels, pools before) of each conv of ``net.features``."""
    plan, pools = [], 0
    for m in net.features:
        if isinstance(m, torch.nn.Conv2d):
            plan.append((m.in_channels, m.out_channels, pools))
        elif isinstance(m, torch.nn.MaxPool2d):
            pools += 1
    return plan


def activation_bytes(plan, height: int, width: int, flip: bool = True) -> int:
    """Estimated peak activation memory of a dense pass on an H x W image: the largest conv's
    float32 input plus output, for the image and its flip."""
    peak = max(((height >> p) * (width >> p) * (cin + cout) for cin, cout, p in plan), default=0)
    return 4 * peak * (2 if flip else 1)
