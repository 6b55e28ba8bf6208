"""The ``vggfeat`` command: extract, evaluate, info, convert."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from . import __version__
from .distributed import is_main_process
from .options import add_options, from_args, option

log = logging.getLogger("vggfeat")
RANDOM = "none"  # --weights none: a randomly initialised net


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
class NetOptions:
    """The network options every vggfeat command and benchmark script shares. ``models`` and
    ``weights`` are resolved on construction: one weights source per model, None for random."""

    DEFAULT_MODELS: ClassVar[tuple[str, ...]] = ("D",)
    FROM_FILES: ClassVar[bool] = True  # without --model: what each --weights file says it holds

    models: list[str | None] | None = option(
        None, flag="--model", action="append", metavar="NAME", help=MODEL_HELP, show=_default_models
    )
    weights: list[str | None] | None = option(
        None, action="append", metavar="SOURCE", help=WEIGHTS_HELP, show="default"
    )
    width: float | None = None  # channel multiplier (default: what the weights hold, else 1)
    fc_dim: int | None = None  # fc6/fc7 width (default: what the weights hold, else 4096)
    batch_size: int | None = None  # images per network run (default: sized to fit)
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: accelerate's choice)

    def __post_init__(self):
        self.models, self.weights = models_and_weights(
            self, default=self.DEFAULT_MODELS, from_files=self.FROM_FILES
        )

    def label(self) -> str:
        """The nets in a run folder's name: each --model, or its weights file's name without one."""
        return "+".join(
            m or (Path(str(w)).stem if w else self.DEFAULT_MODELS[0])
            for m, w in zip(self.models, self.weights)
        )


@dataclass(kw_only=True)
class FeatureOptions(NetOptions):
    """``NetOptions`` and the descriptor's protocol (Appendix B)."""

    PAPER_SCALES: ClassVar[tuple[int, ...]] = (256, 384, 512)  # Sec. 3.2's Q at the 224 crop

    scales: tuple[int, ...] | None = option(
        None, help="smallest sides Q", show=lambda cls: _default_scales(cls)
    )
    aggregate: Literal["mean", "stack", "max"] = "mean"  # over the scales

    def test_scales(self, nets) -> tuple[int, ...]:
        """``--scales``, else ``PAPER_SCALES`` kept in ratio to the nets' training crop c (x c/224:
        73, 110, 146 at crop 64), so that a small-crop net runs at its own geometry."""
        if self.scales:
            return tuple(self.scales)
        from .models import paper_scales

        return paper_scales(training_crop(nets, "--scales"), self.PAPER_SCALES)


def __getattr__(name: str):
    # SVMOptions (the SVM scripts' options) needs scikit-learn for its C grid, ~3 s of imports
    # that `vggfeat extract` and the other commands do not pay: imported on first use.
    if name == "SVMOptions":
        from .cli_svm import SVMOptions

        return SVMOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_model_args(p: argparse.ArgumentParser, options=FeatureOptions) -> None:
    """The options of the dataclass ``options`` (``NetOptions`` or a subclass) on ``p``."""
    add_options(p, options)


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


def build_nets(models, weights, *, width=None, fc_dim=None, preprocess=None, seed: int = 0) -> list:
    """One network per (config, weights) pair. A random net (weights None) is seeded (``seed``
    + its position), so that every process of a distributed run builds the same one, and a
    rerun hits the feature cache; it is announced loudly, as its features mean nothing."""
    import torch

    import vggfeat
    from vggfeat.errors import ConfigMismatch

    nets = []
    for k, (m, w) in enumerate(zip(models, weights)):
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
    from vggfeat.data import ImageError
    from vggfeat.errors import WeightsError

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
    num_workers: int | None = None  # image-decoding processes (default: by CPU count)
    flip: bool = True  # average with the horizontally flipped image
    threads: int | None = option(
        None,
        help="torch's compute threads",
        show="$OMP_NUM_THREADS if set, else the usable CPUs minus 2 decoding workers, at least 1",
    )

    def set_threads(self) -> int:
        """Set torch's thread count on purpose (DESIGN.md, "Threads"): torch's default, one
        thread per core, beside the decoding workers oversubscribes the cores; on 2 busy cores
        `vggfeat extract` of 1000 small images took 108 s with it and 18 s with one thread."""
        import torch

        torch.set_num_threads(compute_threads(self.threads, self.num_workers))
        return torch.get_num_threads()


def compute_threads(threads: int | None, num_workers: int | None) -> int:
    """``threads`` if given; else what ``OMP_NUM_THREADS`` says (the user's choice); else one
    per usable CPU left over by the decoding workers (2 by default, see ``dense.py``)."""
    import os

    if threads:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - (2 if num_workers is None else num_workers))


def _models(o: CommandOptions):
    return build_nets(o.models, o.weights, width=o.width, fc_dim=o.fc_dim, preprocess=o.preprocess)


def cmd_evaluate(args) -> None:
    import numpy as np

    from vggfeat import evaluate

    o = from_args(CommandOptions, args)
    o.set_threads()
    images, labels, classes = evaluate.labels_of(
        args.data, val_labels=args.val_labels, val_synsets=args.val_synsets
    )
    nets = _models(o)
    per_net = [evaluate.net_labels(labels, classes, m) for m in nets]  # each net checked
    if any(not np.array_equal(y, per_net[0]) for y in per_net):
        raise ValueError(
            "--model: the nets order their classes differently; their posteriors cannot be fused"
        )
    labels = per_net[0]
    Ps = [
        evaluate.posteriors(
            m,
            images,
            scales=o.test_scales(nets),
            mode=args.mode,
            flip=o.flip,
            batch_size=o.batch_size,
            device=o.device,
            num_workers=o.num_workers,
        )
        for m in nets
    ]
    P = evaluate.fuse(Ps)
    if not is_main_process():
        return
    print(
        f"top-1 error {100 * evaluate.topk_error(P, labels, 1):.2f}%  "
        f"top-5 error {100 * evaluate.topk_error(P, labels, 5):.2f}%  ({len(labels)} images)"
    )


def cmd_info(args) -> None:
    import torch

    import vggfeat

    source = args.file or args.weights
    if source:
        m = vggfeat.vgg(args.model, weights=source)
        meta = dict(getattr(m, "meta", {}))
        names = meta.pop("class_names", None) or meta.pop("categories", None)
        meta.pop("categories", None)
        about = {
            "arch": m.arch,
            "preprocess": m.preprocess.to_dict(),
            "parameters": vggfeat.count_parameters(m),
            "fingerprint": vggfeat.fingerprint(m),
            "layers": list(m.layers),
            **meta,
        }
        print(json.dumps({**about, **({"class_names": list(names)} if names else {})}, indent=1))
        return
    if args.model:  # one configuration: its layer names and size, built without weights
        with torch.device("meta"):
            m = vggfeat.vgg(args.model)
        print(
            json.dumps({"arch": m.arch, "parameters": vggfeat.count_parameters(m), "layers": list(m.layers)})
        )
        return
    print(f"{'config':8s} {'weight layers':>13s} {'parameters':>14s}")
    for name in vggfeat.CONFIGS:
        with torch.device("meta"):
            m = vggfeat.vgg(name)
        n = sum(1 for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)))
        print(f"{name:8s} {n:13d} {vggfeat.count_parameters(m):14,d}")


def cmd_toy(args) -> None:
    from .toy import ToyConfig, generate

    source, voc = generate(args.out, from_args(ToyConfig, args), progress=True)
    print(f"wrote {source} (ImageFolder: train/, val/) and {voc} (VOC2007 devkit layout)")


def cmd_convert(args) -> None:
    import vggfeat

    m = vggfeat.vgg(args.config, weights=args.src, preprocess=args.preprocess)
    dst = vggfeat.save_weights(m, args.dst, provenance=f"converted from {Path(args.src).name}")
    print(f"wrote {dst}: VGG-{m.config}, preprocessing {m.preprocess.name}")


def cmd_store(args) -> None:
    from .store import compact

    for root, before, after in compact(args.path):
        print(f"{root}: {before} chunks -> {after}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vggfeat", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    from .cli_extract import add_extract_parser

    add_extract_parser(sub)

    v = sub.add_parser("evaluate", help="top-1/top-5 error on an ImageFolder tree (Sec. 3.2 protocols)")
    v.add_argument(
        "data", help="ImageFolder tree ROOT/<class>/<image>, or ILSVRC's flat val/ with its labels"
    )
    v.add_argument(
        "--val-labels", help="flat val/: LOC_val_solution.csv or the devkit's ground truth (default: found)"
    )
    v.add_argument("--val-synsets", help="the devkit's meta.mat, for its ground truth (default: found)")
    add_options(v, CommandOptions, exclude=("aggregate",))
    v.add_argument(
        "--mode",
        default="dense",
        choices=["dense", "multicrop", "both"],
        help="Sec. 3.2 protocol (default: dense)",
    )
    v.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="the configurations, or what a weights file holds")
    i.add_argument(
        "file", nargs="?", help="a weights file (.safetensors, .pth, .caffemodel) or a torchvision name"
    )
    i.add_argument("--weights", default=None, help="the same as FILE")
    i.add_argument("--model", default=None, help="configuration, if the file does not say")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser(
        "toy", help="write the toy data of the demo: an ImageFolder source set and a VOC2007 target"
    )
    t.add_argument("out", type=Path, help="folder to write (source/ and VOCdevkit/ inside)")
    from .toy import ToyConfig

    add_options(t, ToyConfig)
    t.set_defaults(func=cmd_toy)

    c = sub.add_parser("convert", help="any weights file -> our .safetensors with metadata")
    c.add_argument("src", help=".caffemodel, .pth or .safetensors")
    c.add_argument("dst", help="output .safetensors")
    c.add_argument("--config", default=None, help="configuration, if the file does not say")
    c.add_argument("--preprocess", default=None, choices=["imagenet", "caffe"])
    c.set_defaults(func=cmd_convert)

    s = sub.add_parser("store", help="feature-store upkeep: compact PATH merges its chunk files")
    s.add_argument("action", choices=["compact"], help="compact: merge chunks (no writer may run)")
    s.add_argument("path", help="a cache= folder (or a store in it)")
    s.set_defaults(func=cmd_store)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except user_errors() as e:
        print(f"vggfeat {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
