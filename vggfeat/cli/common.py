"""The options the vggfeat command and the benchmark scripts share: the networks
(``NetOptions``), the descriptor's protocol (``FeatureOptions``), the command's own
(``CommandOptions``), building the nets, and a script's entry point (``run_script``)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

import vggfeat

from ..errors import ConfigMismatch, ImageError, WeightsError
from ..nets.models import paper_scales
from ..options import PrecisionOption, option

log = logging.getLogger("vggfeat")
RANDOM = "none"  # --weights none: a randomly initialised net
MAX_SCALE = 8192  # --scales: 16x the paper's largest Q; larger ones are a typo, not a protocol


MODEL_HELP = "configuration (A, A-LRN, B, C, D, E, B-5x5, or vgg16, vgg19_bn, ...); repeat for late fusion"
WEIGHTS_HELP = (
    "one per --model (one 'default' or 'none' serves them all): 'default' (ImageNet weights, "
    "torchvision's IMAGENET1K_V1 for A/B/D/E; no public weights exist for A-LRN, C, B-5x5), 'none' "
    "(RANDOM weights: a plumbing check, features of an untrained net), a torchvision name such as "
    "IMAGENET1K_V1, or a .pth/.safetensors/.caffemodel file"
)


def _default_models(cls) -> str:
    files = ", or what the --weights files hold" if cls.FROM_FILES else ""
    return " ".join(cls.DEFAULT_MODELS) + files


def training_crop(nets, flag: str) -> int:
    """The crop the nets were trained at, which sets the paper's scales; nets of several crops
    have no common default, so ``flag`` must be given."""
    crops = sorted({n.crop for n in nets})
    if len(crops) > 1:
        raise ValueError(f"--model: the nets were trained at different crops {crops}; give {flag}")
    return crops[0]


def _default_scales(cls) -> str:
    return f"{' '.join(map(str, cls.PAPER_SCALES))} for a net trained at crop 224, x c/224 for crop c"


@dataclass(kw_only=True)
class NetOptions(PrecisionOption):
    """The network options every vggfeat command and benchmark script shares (``--precision``
    among them, declared in :mod:`vggfeat.options`). ``models`` and
    ``weights`` hold what was given until ``resolve_models`` makes them one weights source per
    model (None for random), where the nets are built: constructing the options does no work."""

    DEFAULT_MODELS: ClassVar[tuple[str, ...]] = ("D",)
    FROM_FILES: ClassVar[bool] = True  # without --model: what each --weights file says it holds

    models: list[str | None] | None = option(
        None, flag="--model", action="append", metavar="NAME", help=MODEL_HELP, show=_default_models
    )
    weights: list[str | None] | None = option(
        None, action="append", metavar="SOURCE", help=WEIGHTS_HELP, show="default"
    )
    width: float | None = option(
        None, above=0, help="channel multiplier (default: what the weights hold, else 1)"
    )
    fc_dim: int | None = option(
        None, at_least=1, help="fc6/fc7 width (default: what the weights hold, else 4096)"
    )
    batch_size: int | None = option(
        None,
        at_least=1,
        help="images per network run (default: 4 on CPU, 32 on CUDA; 1 and 4 for 25-crop multi-crop)",
    )
    device: str | None = option(None, help="cpu, cuda, cuda:1 ... (default: accelerate's choice)")

    def label(self) -> str:
        """The nets in a run folder's name: each --model, or its weights file's name without one."""
        models, weights = models_and_weights(self, default=self.DEFAULT_MODELS, from_files=self.FROM_FILES)
        return "+".join(
            m or (Path(str(w)).stem if w else self.DEFAULT_MODELS[0]) for m, w in zip(models, weights)
        )


@dataclass(kw_only=True)
class FeatureOptions(NetOptions):
    """``NetOptions`` and the descriptor's protocol (Appendix B)."""

    PAPER_SCALES: ClassVar[tuple[int, ...]] = (256, 384, 512)  # Sec. 3.2's Q at the 224 crop

    scales: tuple[int, ...] | None = option(
        None,
        at_least=1,
        at_most=MAX_SCALE,
        help="smallest sides Q",
        show=lambda cls: _default_scales(cls),
    )
    aggregate: Literal["mean", "stack", "max"] = option("mean", help="over the scales")

    def test_scales(self, nets) -> tuple[int, ...]:
        """``--scales``, else ``PAPER_SCALES`` kept in ratio to the nets' training crop c (x c/224:
        73, 110, 146 at crop 64), so that a small-crop net runs at its own geometry."""
        if self.scales:
            return tuple(self.scales)

        return paper_scales(training_crop(nets, "--scales"), self.PAPER_SCALES)


def models_and_weights(args, default=("D",), from_files: bool = False) -> tuple[list, list]:
    """(configs, weights), one weights source per model: "default" without ``--weights``, None
    for ``--weights none`` (random). Without ``--model``: the ``default`` configs, or with
    ``from_files`` and weights files None each (each file says what it holds)."""
    weights = [None if str(w).lower() == RANDOM else w for w in getattr(args, "weights", None) or []]
    files = [w for w in weights if w not in (None, "default")]  # "none"/"default" hold no net
    models = getattr(args, "models", None) or (
        [None] * len(weights) if files and from_files else list(default)
    )
    if not weights or (len(weights) == 1 and weights[0] in (None, "default")):
        weights = (weights or ["default"]) * len(models)
    if len(weights) != len(models):
        raise SystemExit(f"error: {len(models)} --model but {len(weights)} --weights; give one per --model")
    return models, weights


def resolve_models(o: NetOptions) -> NetOptions:
    """``o`` with ``models`` and ``weights`` resolved by ``models_and_weights`` (once is enough,
    again changes nothing): the step before building ``o``'s nets."""
    o.models, o.weights = models_and_weights(o, default=o.DEFAULT_MODELS, from_files=o.FROM_FILES)
    return o


def build_nets(models, weights, *, width=None, fc_dim=None, preprocess=None, seed: int = 0) -> list:
    """One network per (config, weights) pair. A random net (weights None) is seeded (``seed``
    + its position), so that every process of a distributed run builds the same one, and a
    rerun hits the feature cache; it is announced loudly, as its features mean nothing. The seed
    is set in a forked RNG, leaving the caller's global RNG as it was."""

    nets = []
    for k, (m, w) in enumerate(zip(models, weights)):
        with torch.random.fork_rng(devices=[], enabled=w is None):
            if w is None:
                torch.manual_seed(seed + k)
            try:
                nets.append(vggfeat.vgg(m, weights=w, width=width, fc_dim=fc_dim, preprocess=preprocess))
            except ConfigMismatch as e:
                raise e.naming("--model") from None
        if w is None:
            log.warning(
                "RANDOM WEIGHTS (--weights none): VGG-%s is randomly initialised (seed %d); its "
                "features are a plumbing check, not ImageNet features. Leave --weights out for the "
                "pretrained network.",
                nets[-1].config,
                seed + k,
            )
    return nets


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message tells the user what to do: shown as one line, without a traceback."""

    return (WeightsError, ImageError, FileNotFoundError, ValueError)


def run_script(main, *args):
    """A benchmark script's entry point: ``main(*args)``, with a user error as one line on stderr
    and exit status 2."""
    try:
        return main(*args)
    except user_errors() as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)


@dataclass(kw_only=True)
class CommandOptions(FeatureOptions):
    """The network and protocol options of ``vggfeat extract`` and ``vggfeat evaluate``."""

    FROM_FILES = True

    preprocess: Literal["imagenet", "caffe"] | None = option(
        None, help="override the weights' preprocessing (caffe: converted Caffe state dicts)"
    )
    num_workers: int | None = option(
        None, at_least=0, help="image-decoding processes (default: by CPU count)"
    )
    flip: bool = option(True, help="average with the horizontally flipped image")
    threads: int | None = option(
        None,
        at_least=1,
        help="torch's compute threads",
        show="$OMP_NUM_THREADS if set, else the usable CPUs minus 2 decoding workers, at least 1",
    )

    def set_threads(self) -> int:
        """Set torch's thread count on purpose (docs/architecture.md, "Threads are set on purpose"):
        torch's default, one thread per core, beside the decoding workers oversubscribes the cores;
        on 2 busy cores `vggfeat extract` of 1000 small images took 108 s with it and 18 s with one
        thread."""

        torch.set_num_threads(compute_threads(self.threads, self.num_workers))
        return torch.get_num_threads()


def compute_threads(threads: int | None, num_workers: int | None) -> int:
    """``threads`` if given; else what ``OMP_NUM_THREADS`` says (the user's choice); else one
    per usable CPU left over by the decoding workers (2 by default, see ``dense.py``)."""

    if threads is not None:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - (2 if num_workers is None else num_workers))


def command_nets(o: CommandOptions) -> list:
    """The nets of a ``vggfeat`` command's options, ``o.models`` and ``o.weights`` resolved first."""
    resolve_models(o)
    return build_nets(o.models, o.weights, width=o.width, fc_dim=o.fc_dim, preprocess=o.preprocess)
