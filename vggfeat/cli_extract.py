"""``vggfeat extract``: Appendix-B descriptors of image files, folders, lists or a saved Hugging
Face dataset, written as .npy or .parquet with each row's identity."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .cli import CommandOptions, _models, is_main_process
from .options import add_options, from_args


@dataclass(kw_only=True)
class ExtractOptions(CommandOptions):
    """``vggfeat extract``: what to read, what to compute, where to write."""

    out: Path  # .npy (identities in the .json beside it) or .parquet (an id column beside the rows)
    list: Path | None = None  # a text file of image paths, one per line (relative to the file's folder)
    image_column: str | None = None  # a saved HF dataset's image column (default: its Image-typed column)
    split: str | None = None  # a saved DatasetDict's split (default: its only one, else an error)
    layer: str = "fc7"  # fc7 is post-ReLU, as in the Caffe models (Appendix B)
    normalize: bool = True  # L2-normalise each descriptor (Appendix B)
    cache: Path | None = None  # folder of a resumable feature store (default: none)
    on_error: Literal["raise", "skip"] = "raise"  # skip: unreadable images get NaN rows, listed in the .json
    quiet: bool = False  # no progress bar


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
    from .data import ImageSource, as_source, list_images

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


def write_features(out: Path, X: np.ndarray, ids: list, side: dict) -> list[Path]:
    """``X`` as ``out`` (.npy, or .parquet with an ``id`` column beside a ``features`` column) and
    ``side`` (protocol, identities, failures) as the .json beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), pa.float32()), X.shape[1])
        table = pa.table({"id": ids, "features": feats})
        pq.write_table(table.replace_schema_metadata({"vggfeat": json.dumps(side)}), out)
    elif out.suffix == ".npy":
        np.save(out, X)
    else:
        raise ValueError(f"--out {out}: write .npy or .parquet")
    out.with_suffix(".json").write_text(json.dumps({"rows": ids, **side}, indent=1, default=str))
    return [out, out.with_suffix(".json")]


EXTRACT_DOC = """Appendix-B descriptors: each image rescaled to every Q of --scales, run densely through the
net with its horizontal flip, fc7 averaged over positions, flips and scales, L2-normalised.

Cost of the default protocol (Q = 256, 384, 512, flipped): {square:.0f}x the network cost of one
224 x 224 crop for a square image, {wide:.0f}x for a 4:3 one (sum over Q of 2 x DenseVGG.flops(Q,
aspect x Q, "fc7") over DenseVGG.flops(224, 224, "fc7")); --scales 384 --no-flip: {single:.0f}x.

examples:
  vggfeat extract photos/ more_photos/ --out feats.npy              # VGG-D, ImageNet weights
  vggfeat extract --list files.txt --model E --scales 256 384 --out feats.parquet
  vggfeat extract saved_ds/ --image-column img --split train --out feats.parquet
"""


def cmd_extract(args) -> None:
    import vggfeat

    o = from_args(ExtractOptions, args)
    source, ids = extract_inputs(args.images, o)
    if o.out.suffix not in (".npy", ".parquet"):  # before any work
        raise ValueError(f"--out {o.out}: write .npy or .parquet")
    ext = vggfeat.Extractor(
        tuple(_models(o)),
        scales=o.scales,
        flip=o.flip,
        aggregate=o.aggregate,
        layer=o.layer,
        normalize=o.normalize,
        batch_size=o.batch_size,
        device=o.device,
        num_workers=o.num_workers,
        cache=o.cache,
        on_error=o.on_error,
        progress=not o.quiet,
    )
    X = np.asarray(ext(source), dtype=np.float32)
    if not is_main_process():
        return
    failures = [{"index": i, "name": str(n), "reason": r} for i, n, r in ext.failures_]
    side = {"shape": list(X.shape), "failures": failures, **ext.protocol()}
    written = write_features(o.out, X, ids, side)
    print(f"wrote {written[0]} {tuple(X.shape)} and {written[1]}")


def add_extract_parser(sub) -> None:
    """The ``extract`` sub-command on the ``vggfeat`` parser's sub-parsers ``sub``."""
    costs = dict(
        square=protocol_cost(), wide=protocol_cost(aspect=4 / 3), single=protocol_cost((384,), flip=False)
    )
    e = sub.add_parser(
        "extract",
        help="appendix-B descriptors of images -> .npy or .parquet (+ .json)",
        description=EXTRACT_DOC.format(**costs),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "images",
        nargs="*",
        help="image files, folders (searched recursively), or one saved HF dataset folder",
    )
    add_options(e, ExtractOptions)
    e.set_defaults(func=cmd_extract)
