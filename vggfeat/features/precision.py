"""The one precision policy: what ``precision="auto" | "fp32" | "bf16" | "fp16"`` computes in.

``fp32`` runs the net in float32. ``bf16`` runs it under ``torch.autocast`` in bfloat16 (convs
and matmuls in bf16, their results in bf16, the pooled maps taken back to float32); ``fp16``
the same in float16, on CUDA only (CPUs have no fast float16 path). ``auto`` picks bf16 only
where the device computes it natively and measurably faster than float32:

- CUDA with bf16 tensor cores (compute capability 8.0 and later: A100, H100, RTX 30xx/40xx);
  older GPUs stay in float32 (their tensor cores do float16, whose narrow range is a numerical
  risk ``auto`` does not take: ask for ``fp16`` by name);
- CPUs with AMX (``amx_bf16`` in ``/proc/cpuinfo``: Xeon Sapphire Rapids and later), where
  oneDNN's bf16 convolutions run on the tile units, several times the float32 rate;
- everywhere else float32. ``avx512_bf16`` without AMX (Zen 4/5 EPYC, Cooper Lake Xeon) has
  only a bf16 dot-product instruction (VDPBF16PS) at twice the float32 FMA rate in theory, and
  the bf16 rows were never measured faster on such a CPU: until they are, ``auto`` keeps float32
  there. On a CPU with neither, bf16 is emulated (converted to float32 and back) and slower than
  float32: asking for it by name works, with a warning.

What the hardware offers is read by :func:`probe`; :func:`resolve` takes a :class:`Capability`
instead, so that every branch is tested without the hardware. The resolved name (``"fp32"``,
``"bf16"``, ``"fp16"``) goes into every output: the feature store's protocol key, the files
``vggfeat extract`` writes, the benchmarks' results.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..options import PRECISIONS

AMX = "amx_bf16"
AVX512_BF16 = "avx512_bf16"
CUDA_BF16_CAPABILITY = (8, 0)  # Ampere: the first tensor cores with bf16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Capability:
    """What a device offers for reduced precision: ``kind`` "cpu" or "cuda" (any other torch
    device type is treated as having nothing); ``cpu_flags`` the CPU's feature flags
    (``/proc/cpuinfo``); ``cuda_capability`` the GPU's (major, minor) compute capability;
    ``name`` the device's name, for the reason given."""

    kind: str
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    cuda_capability: tuple[int, int] | None = None
    name: str = ""


@dataclass(frozen=True)
class Resolved:
    """A precision as run: ``name`` "fp32" | "bf16" | "fp16", what was ``asked``, and why."""

    name: str
    asked: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux: the ``flags`` line of ``/proc/cpuinfo``); elsewhere the
    instruction set torch's kernels were dispatched for (``avx2``, ``avx512``; AMX is not
    reported there, so ``auto`` stays float32 on such systems)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset({torch.backends.cpu.get_cpu_capability().lower()})


def probe(device) -> Capability:
    """The :class:`Capability` of ``device`` (a torch device or its name) on this machine."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return Capability(
            "cuda",
            cuda_capability=tuple(torch.cuda.get_device_capability(index)),
            name=torch.cuda.get_device_name(index),
        )
    if device.type == "cpu":
        return Capability("cpu", cpu_flags=cpu_flags(), name=_cpu_name())
    return Capability(device.type, name=device.type)


@functools.cache
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "this CPU"


def check(precision: str, name: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def auto(cap: Capability) -> tuple[str, str]:
    """(precision, reason) that ``"auto"`` resolves to on a device of capability ``cap``."""
    if cap.kind == "cuda":
        cc = cap.cuda_capability or (0, 0)
        if tuple(cc) >= CUDA_BF16_CAPABILITY:
            return (
                "bf16",
                f"{cap.name or 'the GPU'} (compute capability {cc[0]}.{cc[1]}) has bf16 tensor cores",
            )
        return "fp32", (
            f"{cap.name or 'the GPU'} (compute capability {cc[0]}.{cc[1]}) has no bf16 tensor cores "
            "(8.0 and later have them); fp16 is available by name"
        )
    if cap.kind == "cpu":
        if AMX in cap.cpu_flags:
            return "bf16", f"{cap.name or 'the CPU'} has AMX ({AMX}): oneDNN runs bf16 on its tile units"
        if AVX512_BF16 in cap.cpu_flags:
            return "fp32", (
                f"{cap.name or 'the CPU'} has {AVX512_BF16} but no AMX: bf16 is native but not "
                "measured faster than fp32 on such a CPU, so auto keeps fp32"
            )
        return "fp32", (
            f"{cap.name or 'the CPU'} has neither AMX nor {AVX512_BF16}: bf16 would be emulated, "
            "slower than fp32"
        )
    return "fp32", f"no reduced-precision policy for device type {cap.kind!r}"


def resolve(precision: str, device, capability: Capability | None = None) -> Resolved:
    """What ``precision`` runs as on ``device``; ``capability`` replaces :func:`probe` (tests).

    ``fp16`` on a CPU is refused (no fast float16 path: use bf16 or fp32); ``bf16`` where it is
    emulated runs, with a warning that it is slower than fp32 there."""
    check(precision)
    cap = capability if capability is not None else probe(device)
    if precision == "auto":
        name, reason = auto(cap)
        return Resolved(name, "auto", reason)
    if precision == "fp16" and cap.kind != "cuda":
        raise ValueError(f"precision='fp16' is for CUDA GPUs; on {cap.kind} use 'bf16' or 'fp32' (or 'auto')")
    if precision == "bf16" and cap.kind == "cpu" and not {AMX, AVX512_BF16} & cap.cpu_flags:
        warnings.warn(
            f"precision='bf16' on {cap.name or 'a CPU'} without AMX or {AVX512_BF16}: bf16 is "
            "emulated there and slower than fp32",
            RuntimeWarning,
            stacklevel=3,
        )
    return Resolved(precision, precision, "asked for by name")


def autocast(resolved: Resolved, device_type: str):
    """The context the net runs in: ``torch.autocast`` in the reduced dtype, or nothing."""
    return torch.autocast(device_type, dtype=resolved.dtype, enabled=resolved.reduced)


def describe(device=None, capability: Capability | None = None) -> dict:
    """What ``auto`` resolves to on ``device`` (default: the CPU, and the GPU if there is one),
    and why: ``{device: {"auto": name, "reason": ...}}`` (for ``vggfeat info``)."""
    devices = [device] if device is not None else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {}
    for d in devices:
        r = resolve("auto", d, capability)
        out[str(d)] = {"auto": r.name, "reason": r.reason}
    return out
