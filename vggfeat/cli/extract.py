"""``vggfeat extract``: Appendix-B descriptors of image files, folders, lists or a saved Hugging
Face dataset, written as .npy or .parquet with each row's identity."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import vggfeat

from ..data.decode import ImageSource, as_source, list_images
from ..errors import OutputError
from ..features.distributed import is_main_process
from ..files import atomic_group, atomic_path, check_output
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
        None,
        help="a text file of image paths, one per line (relative to the file's folder), read "
        "literally: spaces and a leading # are part of the name; only empty lines are skipped, "
        "and a listed file that does not exist is an error",
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

    with torch.device("meta"):
        dense = vggfeat.vgg(config).dense()
    per_q = [dense.flops(q, round(q * aspect), "fc7") for q in scales]
    return (2 if flip else 1) * sum(per_q) / dense.flops(224, 224, "fc7")


def _read_list(path: Path, *, must_exist: bool = True) -> list[Path]:
    """The paths of a ``--list`` file, read literally (see its help): a line is a file name as
    the file system holds it (bytes; names in any encoding, as ``os.fsdecode`` gives them)."""
    if not path.is_file():
        raise FileNotFoundError(f"--list {path}: no such file; give a text file with one image path per line")
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        p = Path(os.fsdecode(line))
        p = p if p.is_absolute() else path.parent / p
        if must_exist and not p.is_file():
            raise FileNotFoundError(
                f"--list {path}, line {n}: {os.fsdecode(line)!r} is no file ({p}); lines are read "
                "literally (spaces and # included)"
            )
        out.append(p)
    return out


def _saved_dataset(path: Path, o: ExtractOptions):
    import datasets  # deferred: datasets costs seconds to import

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if o.split is None and len(ds) != 1:
            raise ValueError(f"{path} holds the splits {list(ds)}: choose one with --split")
        ds = ds[o.split or next(iter(ds))]
    return ds


def is_saved_dataset(path: Path) -> bool:
    """A ``save_to_disk`` folder: a Dataset's state.json beside its dataset_info.json, or a
    DatasetDict's dataset_dict.json (a stray dataset_info.json in an image folder is not one)."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    )


def extract_inputs(images: list[str], o: ExtractOptions):
    """(what ``Extractor`` reads, one identity per row): image files, folders (searched
    recursively) and ``--list`` files, in the order given, with their paths; or one saved Hugging
    Face dataset (``datasets.load_from_disk`` folder) with its row numbers."""

    paths = [Path(x) for x in images]
    if len(paths) == 1 and is_saved_dataset(paths[0]):
        if o.list:
            raise ValueError("--list cannot be combined with a saved dataset; give one or the other")
        ds = _saved_dataset(paths[0], o)
        return as_source(ds, image_column=o.image_column), list(range(len(ds)))
    files = []
    for p in paths + ([o.list] if o.list else []):
        if p == o.list:
            files += _read_list(p, must_exist=o.on_error == "raise")
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


def written_path(out: Path, fmt: str) -> Path:
    """The file a format writes for ``--out``: a .npy output is ``out`` with ``.npy`` added when
    it has another suffix (as ``np.save`` names it), so what is printed is what was written."""
    return out if fmt != "npy" or out.suffix == ".npy" else out.with_name(out.name + ".npy")


def output_paths(out: Path, fmt: str, layers: list[str]) -> list[Path]:
    """Every path ``write_features`` writes: the .npy of each layer and the sidecar last, or the
    one .parquet file or hf folder."""
    if fmt != "npy":
        return [out]
    out = written_path(out, fmt)
    return [*(layer_file(out, n, layers) for n in layers), sidecar(out)]


def check_outputs(out: Path, fmt: str, layers: list[str], inputs: list[Path], ids: list, need: int) -> None:
    """Before any work: no output is an input or inside an input dataset folder (or holds an
    input), every output can be written with ``need`` bytes, and every id can be stored in
    ``fmt`` (parquet and hf hold UTF-8 strings)."""
    written = [p.resolve() for p in output_paths(out, fmt, layers)]
    files = {Path(i).resolve() for i in ids if isinstance(i, str)}
    for w in written:
        if w in files:
            raise OutputError(f"--out {out}: {w} is one of the input images; choose another --out")
    for src in inputs:
        src = src.resolve()
        dataset = src.is_dir() and is_saved_dataset(src)
        for w in written:
            inside = w.is_relative_to(src) and (dataset or w == src)
            if w == src or inside or src.is_relative_to(w):
                what = "an input dataset" if dataset else "an input"
                raise OutputError(
                    f"--out {out}: {w} is {what} or in it ({src}); writing there would replace what "
                    "is being read. Choose another --out"
                )
    if fmt == "hf" and out.is_dir() and any(out.iterdir()) and not is_saved_dataset(out):
        raise OutputError(
            f"--out {out} is a folder that holds other files, not a saved dataset; --format hf "
            "replaces the whole folder: give a new or empty folder"
        )
    for w in output_paths(out, fmt, layers):
        check_output(w, need=need, folder_ok=fmt == "hf")
    if fmt in ("parquet", "hf"):
        for i in ids:
            try:
                str(i).encode("utf-8")
            except UnicodeEncodeError:
                name = os.fsencode(str(i)) if isinstance(i, str) else i
                raise OutputError(
                    f"--format {fmt}: the image name {name!r} is not valid UTF-8, which {fmt} ids "
                    "must be; rename the file, or use --format npy (its JSON sidecar keeps any name)"
                ) from None


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_features(out: Path, fmt: str, X: dict[str, np.ndarray], ids: list, side: dict) -> list[Path]:
    """Each layer's rows ``X[layer]`` as ``fmt``: .npy files (one per layer) with the sidecar
    (identities, protocol, failures, and each .npy's SHA-256); a .parquet file with an ``id``
    column beside one column per layer and ``side`` in its schema metadata; or a Hugging Face
    dataset (``save_to_disk``) with the same columns and ``side`` as its description. Existing
    outputs are replaced with a warning, atomically (:mod:`vggfeat.files`): the .npy files and
    their sidecar are one unit, never new rows with an old run's names."""
    layers, out = list(X), Path(out)
    side = {"rows": ids, **side}
    need = sum(x.nbytes for x in X.values()) + 64 * len(ids) + 4096
    paths = output_paths(out, fmt, layers)
    for p in paths:
        _replacing(p)
    if fmt == "npy":
        with atomic_group(paths, need=need) as tmps:
            for n, t in zip(layers, tmps):
                with open(t, "wb") as f:
                    np.save(f, X[n])
            if len(layers) > 1:
                side["files"] = {n: p.name for n, p in zip(layers, paths)}
            side["sha256"] = {p.name: _sha256(t) for p, t in zip(paths, tmps[:-1])}
            tmps[-1].write_text(json.dumps(side, indent=1, default=str))
        return paths
    import pyarrow as pa  # deferred: pyarrow adds to start-up

    cols = {"id": ids}
    for n in layers:
        cols[column(n, layers)] = pa.FixedSizeListArray.from_arrays(
            pa.array(X[n].reshape(-1), pa.float32()), X[n].shape[1]
        )
    table = pa.table(cols)
    text = json.dumps({k: v for k, v in side.items() if k != "rows"}, default=str)
    if fmt == "parquet":
        import pyarrow.parquet as pq  # deferred: pyarrow adds to start-up

        with atomic_path(out, need=need) as tmp:
            pq.write_table(table.replace_schema_metadata({"vggfeat": text}), str(tmp))
        return [out]
    import datasets  # deferred: datasets costs seconds to import

    ds = datasets.Dataset(datasets.table.InMemoryTable(table))
    ds.info.description = text
    with atomic_path(out, need=need) as tmp:
        ds.save_to_disk(str(tmp))
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

    o = from_args(ExtractOptions, args)
    twice = sorted({n for n in o.layers if o.layers.count(n) > 1})
    if twice:
        raise ValueError(f"--layer {twice[0]} is given twice; give each layer once")
    fmt = output_format(o)  # before any work
    if o.cache is not None and o.cache.exists() and not o.cache.is_dir():
        raise OutputError(
            f"--cache {o.cache} is a file; give a folder (made if missing) for the feature store"
        )
    o.set_threads()
    source, ids = extract_inputs(args.images, o)
    inputs = [Path(x) for x in args.images] + ([o.list] if o.list else [])
    check_outputs(o.out, fmt, list(o.layers), inputs, ids, need=0)  # before building the nets
    nets = command_nets(o)
    with warnings.catch_warnings():  # command_nets announced random weights already, once
        warnings.simplefilter("ignore", vggfeat.errors.RandomWeightsWarning)
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
            precision=o.precision,
        )
    check_outputs(o.out, fmt, list(o.layers), inputs, ids, need=len(ids) * (4 * ext.dim + 64) + 4096)
    X = {n: np.asarray(x, dtype=np.float32) for n, x in ext(source).items()}
    if not is_main_process():
        return
    failures = [{"index": i, "name": str(n), "reason": r} for i, n, r in ext.failures_]
    if ids and len(failures) == len(ids):
        raise ValueError(
            f"every one of the {len(ids)} images failed (first: {failures[0]['name']}: "
            f"{failures[0]['reason']}); nothing was written"
        )
    shapes = {n: list(x.shape) for n, x in X.items()}
    side = {"shape": shapes[o.layers[0]] if len(X) == 1 else shapes, "failures": failures, **ext.protocol()}
    side["layer"] = o.layers[0] if len(X) == 1 else list(o.layers)
    # what the rows were computed in, with what was asked and why (the store key's name aside)
    side |= {"precision": ext.precision.name, "precision_asked": o.precision}
    side["precision_reason"] = ext.precision.reason
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
