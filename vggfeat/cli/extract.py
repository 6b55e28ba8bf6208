"""``vggfeat extract``: Appendix-B descriptors of image files, folders, lists or a saved Hugging
Face dataset, written as .npy or .parquet with each row's identity."""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..features.distributed import is_main_process
from ..options import add_options, from_args, option
from .common import CommandOptions, command_nets

log = logging.getLogger("vggfeat")
# E's layers, the most of any config; the others have fewer convs per block (Table 1).
E_LAYERS = [
    *(
        n
        for b, k in enumerate((2, 2, 4, 4, 4), 1)
        for n in [*(f"conv{b}_{i}" for i in range(1, k + 1)), f"pool{b}"]
    ),
    *("fc6", "fc7", "fc8"),
]
LAYER_HELP = (
    "the layer whose maps are pooled into descriptors; repeat for several layers in one pass "
    "(one .npy per layer, feats.<layer>.npy, or one column per layer). Names, E's: "
    + " ".join(E_LAYERS)
    + "; fewer convs per block in A-D (1,1,2,2,2 for A; 2,2,3,3,3 for C, D), norm1 in A-LRN; "
    "fc7 is post-ReLU (Appendix B); `vggfeat info --model X` lists a net's layers"
)


@dataclass(kw_only=True)
class ExtractOptions(CommandOptions):
    """``vggfeat extract``: what to read, what to compute, where to write."""

    out: Path = option(
        help=".npy (identities in feats.npy.json), .parquet (an id column), or an hf dataset folder"
    )
    format: Literal["npy", "parquet", "hf"] | None = option(
        None, help="hf: a Hugging Face dataset folder (save_to_disk)", show="by --out's suffix"
    )
    list: Path | None = option(
        None, help="a text file of image paths, one per line (relative to the file's folder)"
    )
    image_column: str | None = option(
        None, help="a saved HF dataset's image column (default: its Image-typed column)"
    )
    split: str | None = option(
        None, help="a saved DatasetDict's split (default: its only one, else an error)"
    )
    layers: tuple[str, ...] = option(
        ("fc7",), flag="--layer", action="append", metavar="NAME", help=LAYER_HELP
    )
    normalize: bool = option(True, help="L2-normalise each descriptor (Appendix B)")
    cache: Path | None = option(None, help="folder of a resumable feature store (default: none)")
    on_error: Literal["raise", "skip"] = option(
        "raise", help="skip: unreadable images get NaN rows, listed in the .json"
    )
    quiet: bool = option(False, help="no progress bar")


def protocol_cost(scales=(256, 384, 512), *, flip: bool = True, aspect: float = 1.0, config="D") -> float:
    """The network cost of one image under the dense protocol, in 224 x 224 forward passes: the
    sum over Q of ``DenseVGG.flops`` up to fc7 on the image rescaled to smallest side Q and
    ``aspect`` times wider (x 2 with the flip), over ``flops`` at 224 x 224."""
    import torch

    import vggfeat

    with torch.device("meta"):
        dense = vggfeat.vgg(config).dense()
    per_q = [dense.flops(q, round(q * aspect), "fc7") for q in scales]
    return (2 if flip else 1) * sum(per_q) / dense.flops(224, 224, "fc7")


def _read_list(path: Path) -> list[Path]:
    if not path.is_file():
        raise FileNotFoundError(f"--list {path}: no such file; give a text file with one image path per line")
    lines = [x.strip() for x in path.read_text().splitlines()]
    paths = [Path(x) for x in lines if x and not x.startswith("#")]  # blank lines and comments skipped
    return [p if p.is_absolute() else path.parent / p for p in paths]


def _saved_dataset(path: Path, o: ExtractOptions):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if o.split is None and len(ds) != 1:
            raise ValueError(f"{path} holds the splits {list(ds)}: choose one with --split")
        ds = ds[o.split or next(iter(ds))]
    return ds


def extract_inputs(images: list[str], o: ExtractOptions):
    """(what ``Extractor`` reads, one identity per row): image files, folders (searched
    recursively) and ``--list`` files, in the order given, with their paths; or one saved Hugging
    Face dataset (``datasets.load_from_disk`` folder) with its row numbers."""
    from ..data.decode import ImageSource, as_source, list_images

    paths = [Path(x) for x in images]
    if len(paths) == 1 and any((paths[0] / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        if o.list:
            raise ValueError("--list cannot be combined with a saved dataset; give one or the other")
        ds = _saved_dataset(paths[0], o)
        return as_source(ds, image_column=o.image_column), list(range(len(ds)))
    files = []
    for p in paths + ([o.list] if o.list else []):
        if p == o.list:
            files += _read_list(p)
        elif p.is_dir():
            files += list_images(p)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    if not files:
        raise ValueError("no images: give image files, folders, --list FILE or a saved dataset folder")
    return ImageSource(files, names=files), [str(f) for f in files]


FORMATS = {".npy": "npy", ".parquet": "parquet"}  # by --out's suffix; "hf" is asked for by name


def output_format(o: ExtractOptions) -> str:
    """npy, parquet or hf: ``--format``, else ``--out``'s suffix; checked before any work."""
    fmt = o.format or FORMATS.get(o.out.suffix)
    if fmt is None:
        raise ValueError(
            f"--out {o.out}: write .npy or .parquet, or a Hugging Face dataset folder with --format hf"
        )
    return fmt


def sidecar(out: Path) -> Path:
    """Where a .npy output's identities and protocol go: ``feats.npy.json``, a name no other
    output shares (a .parquet file and an hf folder hold them inside)."""
    return out.with_name(out.name + ".json")


def layer_file(out: Path, layer: str, layers: list[str]) -> Path:
    """The .npy of ``layer``: ``out`` itself for one layer, ``feats.fc7.npy`` beside it for several."""
    return out if len(layers) == 1 else out.with_name(f"{out.stem}.{layer}{out.suffix}")


def column(layer: str, layers: list[str]) -> str:
    """A parquet or hf column: ``features`` for one layer, ``features_<layer>`` for several (as
    ``Extractor`` names its ``Dataset.map`` columns)."""
    return "features" if len(layers) == 1 else f"features_{layer}"


def _replacing(path: Path) -> Path:
    if path.exists():
        log.warning("overwriting %s", path)
    return path


def write_features(out: Path, fmt: str, X: dict[str, np.ndarray], ids: list, side: dict) -> list[Path]:
    """Each layer's rows ``X[layer]`` as ``fmt``: .npy files (one per layer) with the sidecar
    (identities, protocol, failures); a .parquet file with an ``id`` column beside one column per
    layer and ``side`` in its schema metadata; or a Hugging Face dataset (``save_to_disk``) with
    the same columns and ``side`` as its description. Existing files are replaced with a warning."""
    layers = list(X)
    out.parent.mkdir(parents=True, exist_ok=True)
    side = {"rows": ids, **side}
    if fmt == "npy":
        files = {n: layer_file(out, n, layers) for n in layers}
        for n, f in files.items():
            np.save(_replacing(f), X[n])
        if len(layers) > 1:
            side["files"] = {n: f.name for n, f in files.items()}
        meta = _replacing(sidecar(out))
        meta.write_text(json.dumps(side, indent=1, default=str))
        return [*files.values(), meta]
    import pyarrow as pa

    cols = {"id": ids}
    for n in layers:
        cols[column(n, layers)] = pa.FixedSizeListArray.from_arrays(
            pa.array(X[n].reshape(-1), pa.float32()), X[n].shape[1]
        )
    table = pa.table(cols)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        text = json.dumps({k: v for k, v in side.items() if k != "rows"}, default=str)
        pq.write_table(table.replace_schema_metadata({"vggfeat": text}), _replacing(out))
        return [out]
    import datasets

    ds = datasets.Dataset(datasets.table.InMemoryTable(table))
    ds.info.description = json.dumps({k: v for k, v in side.items() if k != "rows"}, default=str)
    ds.save_to_disk(str(_replacing(out)))
    return [out]


EXTRACT_DOC = """Appendix-B descriptors: each image rescaled to every Q of --scales, run densely through the
net with its horizontal flip, fc7 averaged over positions, flips and scales, L2-normalised.

Cost of the default protocol (Q = 256, 384, 512, flipped): {square:.0f}x the network cost of one
224 x 224 crop for a square image, {wide:.0f}x for a 4:3 one (sum over Q of 2 x DenseVGG.flops(Q,
aspect x Q, "fc7") over DenseVGG.flops(224, 224, "fc7")); --scales 384 --no-flip: {single:.0f}x.

examples:
  vggfeat extract photos/ more_photos/ --out feats.npy              # VGG-D, ImageNet weights
  vggfeat extract --list files.txt --model E --scales 256 384 --out feats.parquet
  vggfeat extract saved_ds/ --image-column img --split train --out feats.parquet
  vggfeat extract photos/ --layer pool5 --layer fc7 --format hf --out feats_ds/  # two columns
"""


def cmd_extract(args) -> None:
    import vggfeat

    o = from_args(ExtractOptions, args)
    twice = sorted({n for n in o.layers if o.layers.count(n) > 1})
    if twice:
        raise ValueError(f"--layer {twice[0]} is given twice; give each layer once")
    fmt = output_format(o)  # before any work
    o.set_threads()
    source, ids = extract_inputs(args.images, o)
    nets = command_nets(o)
    with warnings.catch_warnings():  # command_nets announced random weights already, once
        warnings.simplefilter("ignore", vggfeat.features.extract.RandomWeightsWarning)
        ext = vggfeat.Extractor(
            tuple(nets),
            scales=o.test_scales(nets),
            flip=o.flip,
            aggregate=o.aggregate,
            layer=tuple(o.layers),
            normalize=o.normalize,
            batch_size=o.batch_size,
            device=o.device,
            num_workers=o.num_workers,
            cache=o.cache,
            on_error=o.on_error,
            progress=not o.quiet,
        )
    X = {n: np.asarray(x, dtype=np.float32) for n, x in ext(source).items()}
    if not is_main_process():
        return
    failures = [{"index": i, "name": str(n), "reason": r} for i, n, r in ext.failures_]
    shapes = {n: list(x.shape) for n, x in X.items()}
    side = {"shape": shapes[o.layers[0]] if len(X) == 1 else shapes, "failures": failures, **ext.protocol()}
    side["layer"] = o.layers[0] if len(X) == 1 else list(o.layers)
    written = write_features(o.out, fmt, X, ids, side)
    print(f"wrote {', '.join(map(str, written))}: {len(ids)} rows of {', '.join(map(str, shapes.values()))}")


class _CostedHelp(argparse.RawDescriptionHelpFormatter):
    """Fills ``EXTRACT_DOC``'s protocol costs in when the help is shown: counting them builds
    (meta-device) networks, which parsing a command line never needs."""

    def add_text(self, text):
        if text == EXTRACT_DOC:
            costs = dict(
                square=protocol_cost(),
                wide=protocol_cost(aspect=4 / 3),
                single=protocol_cost((384,), flip=False),
            )
            text = EXTRACT_DOC.format(**costs)
        super().add_text(text)


def add_extract_parser(sub) -> None:
    """The ``extract`` sub-command on the ``vggfeat`` parser's sub-parsers ``sub``."""
    e = sub.add_parser(
        "extract",
        help="appendix-B descriptors of images -> .npy (+ .npy.json), .parquet or an hf dataset folder",
        description=EXTRACT_DOC,
        formatter_class=_CostedHelp,
    )
    e.add_argument(
        "images",
        nargs="*",
        help="image files, folders (searched recursively), or one saved HF dataset folder",
    )
    add_options(e, ExtractOptions)
    e.set_defaults(func=cmd_extract)
