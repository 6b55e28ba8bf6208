"""The ``vggfeat`` command: extract, evaluate, info, convert."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import vggfeat

from .. import __version__
from ..evaluation import posteriors as evaluate
from ..experiments.toy import ToyConfig, generate
from ..features.dense import default_device
from ..features.distributed import is_main_process
from ..features.precision import describe, resolve
from ..features.upkeep import compact
from ..options import add_options, from_args, option
from .common import CommandOptions, command_nets, user_errors
from .extract import add_extract_parser

log = logging.getLogger("vggfeat")


def cmd_evaluate(args) -> None:

    o = from_args(CommandOptions, args)
    o.set_threads()
    images, labels, classes = evaluate.labels_of(
        args.data, val_labels=args.val_labels, val_synsets=args.val_synsets
    )
    nets = command_nets(o)
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
            precision=o.precision,
        )
        for m in nets
    ]
    P = evaluate.fuse(Ps)
    if not is_main_process():
        return
    ran = resolve(o.precision, default_device(o.device))
    print(
        f"top-1 error {100 * evaluate.topk_error(P, labels, 1):.2f}%  "
        f"top-5 error {100 * evaluate.topk_error(P, labels, 5):.2f}%  ({len(labels)} images) in {ran.name}"
    )


@dataclass(kw_only=True)
class InfoOptions:
    """``vggfeat info``'s options (beside its FILE)."""

    weights: str | None = option(
        None, help="the same as FILE (default: FILE; without both, the configurations)"
    )
    model: str | None = option(None, help="configuration, if the file does not say (default: what it says)")


@dataclass(kw_only=True)
class ConvertOptions:
    """``vggfeat convert``'s options (beside its SRC and DST)."""

    config: str | None = option(None, help="configuration, if the file does not say (default: what SRC says)")
    preprocess: Literal["imagenet", "caffe"] | None = option(
        None, help="the weights' preprocessing (caffe: converted Caffe state dicts)", show="what SRC says"
    )


def cmd_info(args) -> None:

    o = from_args(InfoOptions, args)
    source = args.file or o.weights
    if source:
        m = vggfeat.vgg(o.model, weights=source)
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
    if o.model:  # one configuration: its layer names and size, built without weights
        with torch.device("meta"):
            m = vggfeat.vgg(o.model)
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

    for device, d in describe().items():  # what --precision auto runs in here, and why
        print(f"precision auto on {device}: {d['auto']} ({d['reason']})")


def cmd_toy(args) -> None:

    source, voc = generate(args.out, from_args(ToyConfig, args), progress=True)
    print(f"wrote {source} (ImageFolder: train/, val/) and {voc} (VOC2007 devkit layout)")


def cmd_convert(args) -> None:

    o = from_args(ConvertOptions, args)
    m = vggfeat.vgg(o.config, weights=args.src, preprocess=o.preprocess)
    was = getattr(m, "meta", {}).get("provenance")  # a trained run's record is kept, not replaced
    note = f"converted from {Path(args.src).name}"
    dst = vggfeat.save_weights(m, args.dst, provenance=f"{was}; {note}" if was else note)
    print(f"wrote {dst}: VGG-{m.config}, preprocessing {m.preprocess.name}")


def cmd_store(args) -> None:

    for root, before, after in compact(args.path):
        print(f"{root}: {before} chunks -> {after}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vggfeat", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

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
    add_options(i, InfoOptions)
    i.set_defaults(func=cmd_info)

    t = sub.add_parser(
        "toy", help="write the toy data of the demo: an ImageFolder source set and a VOC2007 target"
    )
    t.add_argument("out", type=Path, help="folder to write (source/ and VOCdevkit/ inside)")

    add_options(t, ToyConfig)
    t.set_defaults(func=cmd_toy)

    c = sub.add_parser("convert", help="any weights file -> our .safetensors with metadata")
    c.add_argument("src", help=".caffemodel, .pth or .safetensors")
    c.add_argument("dst", help="output .safetensors")
    add_options(c, ConvertOptions)
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
