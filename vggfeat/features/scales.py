"""The test scales Q of an extraction: the named protocols (the paper's three Q with flips, or
one Q without), the paper's Q kept in ratio to a net's training crop, and the check that every Q
gives each asked layer a map."""

from __future__ import annotations

import numpy as np

from ..nets.models import VGG, paper_scales

# Named protocols: Sec. 3.2's dense multi-scale evaluation (the default), and one scale, no flip.
PROTOCOLS = ("paper", "single")

SINGLE_Q = 384  # Sec. 3.2 / Table 3: the single test scale of a net trained with S in [256, 512]


def default_scales(models: list[VGG], protocol: str = "paper") -> tuple[int, ...]:
    """Sec. 3.2's Q = 256, 384, 512 for the paper's 224 crop (``protocol="single"``: Q = 384),
    kept in ratio for other crops."""
    crops = sorted({m.crop for m in models})
    if len(crops) > 1:
        raise ValueError(
            f"the fused nets were trained at different crops {crops}, so the paper's scales differ "
            "between them; pass scales= explicitly"
        )
    return paper_scales(crops[0], (SINGLE_Q,) if protocol == "single" else (256, 384, 512))


def as_scales(scales) -> tuple[int, ...]:
    """``scales``: one smallest side Q (an int) or several -> a tuple of ints."""
    qs = (
        (scales,)
        if _number(scales)
        else tuple(scales)
        if isinstance(scales, (tuple, list, np.ndarray))
        else ()
    )
    if not qs or not all(_number(q) and np.isfinite(q) and q == int(q) for q in qs):
        raise ValueError(
            f"scales must be a smallest side Q in pixels or several, e.g. 384 or (256, 384), got {scales!r}"
        )
    return tuple(int(q) for q in qs)


def _number(q) -> bool:
    return isinstance(q, (int, float, np.number)) and not isinstance(q, bool)


def check_scales(models: list[VGG], scales: tuple[int, ...], layers: tuple[str, ...]) -> None:
    """Every Q gives each layer a map: at least the training crop for fc6 to fc8 (fc6 spans a
    crop's whole pool5 map), at least 2^pools for a conv or pool layer."""
    for m in models:
        dense = m.dense()
        for name in layers:
            need = dense.min_side(name)
            if min(scales) < need:
                why = f"the training crop of VGG-{m.config}" if need == m.crop else "its pooling"
                raise ValueError(
                    f"scales {list(scales)}: every smallest side Q must be at least {need} pixels for "
                    f"layer {name!r} ({why}); pass larger scales, or a conv layer such as 'pool5'"
                )
