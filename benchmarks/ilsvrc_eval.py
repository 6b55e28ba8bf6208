"""ILSVRC-2012 validation error with the paper's test protocols (Sec. 3.2, Tables 3-6).

    python benchmarks/ilsvrc_eval.py --data ILSVRC2012/val                 # D, ImageNet weights
    python benchmarks/ilsvrc_eval.py --data ILSVRC2012/val --model D --weights D.safetensors \
        --model E --weights E.safetensors --protocols single,multi,multicrop,both,fusion

``--data``: an ImageFolder tree (``val/<wnid>/<image>.JPEG``, classes in sorted wnid order as
the training set) or a Hugging Face dataset saved with ``save_to_disk`` (``image`` and
``label`` columns; ``--split`` picks one split of a DatasetDict). Writes runs/<name>/report.md
and results.json: top-1/top-5 error beside the paper's and chance (a random ranking of the net's
classes), and seconds per image of each protocol; ``comparable: true`` only for the paper's nets
(D, E at full size with the authors' released weights) on every image of the 50,000 with the
jitter range of Tables 3-6, each reason listed otherwise. Under ``accelerate launch`` every
process evaluates its shard and the main one writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vggfeat import evaluate
from vggfeat.cli.common import NetOptions, build_nets, resolve_models, run_script, training_crop
from vggfeat.evaluation import plots
from vggfeat.evaluation.chance import chance_errors, chance_topk
from vggfeat.features.distributed import is_main_process
from vggfeat.nets.models import paper_scale
from vggfeat.options import add_options, from_args, option

LAYOUT = """expected one of:
  an ImageFolder tree   VAL/<class>/<image>.JPEG   (ILSVRC2012 val sorted into class folders,
                        e.g. with the valprep.sh script from the PyTorch ImageNet example)
  a saved HF dataset    datasets.load_from_disk(VAL) with 'image' and 'label' columns
Nothing is downloaded: ImageNet requires registration at image-net.org."""


def _protocols(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(kw_only=True)
class Config(NetOptions):
    data: str = option(help="ImageFolder val tree or saved HF dataset")
    protocols: tuple[str, ...] = option(
        evaluate.PROTOCOLS,
        type=_protocols,
        nargs=None,
        help="comma-separated subset",
        show=",".join(evaluate.PROTOCOLS),
    )
    jitter: tuple[int, int] | None = option(
        None, help="training scale range (sets Q)", show="256 512 for a net of crop 224, x c/224 for crop c"
    )
    split: str = option("validation", help="split of a saved DatasetDict")
    max_images: int | None = option(None, at_least=1, help="first N images only: quick run, not comparable")
    out: Path | None = option(None, help="output folder (default: runs/ilsvrc_<models>)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return from_args(Config, args)


def load_data(cfg: Config):
    """(images, labels) from an ImageFolder tree or a saved HF dataset; clear error otherwise."""
    path = Path(cfg.data)
    if not path.exists():
        raise SystemExit(f"error: --data {cfg.data} does not exist; {LAYOUT}")
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[cfg.split]
        if cfg.max_images:
            ds = ds.select(range(min(cfg.max_images, len(ds))))
        return evaluate.labels_of(ds)[:2]
    try:
        images, labels, _ = evaluate.labels_of(path)
    except (FileNotFoundError, OSError) as e:
        raise SystemExit(f"error: cannot read {path} ({e}); {LAYOUT}") from None
    n = cfg.max_images or len(labels)
    return images[:n], labels[:n]


def report(cfg: Config, rows: list[dict], not_comparable: list[str], chance: dict) -> str:
    lines = [
        "# ILSVRC-2012 val, top-1 / top-5 error (%)",
        "",
        *([f"**Not comparable with the paper: {'; '.join(not_comparable)}.**", ""] if not_comparable else []),
        f"Computed in {rows[0]['precision']} (--precision {cfg.precision}).",
        "",
        "| model | protocol | Q | ours top-1 | ours top-5 | paper top-1 | paper top-5 | s/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['protocol']} | {','.join(map(str, r['scales']))} | {r['top1']:.2f} | "
            f"{r['top5']:.2f} | {fmt(r['paper_top1'], '.1f')} | {fmt(r['paper_top5'], '.1f')} | "
            f"{fmt(r['seconds_per_image'], '.3f')} |"
        )
    lines.append(
        f"| chance | random ranking of {chance['classes']} classes | – | {chance['top1']:.2f} | "
        f"{chance['top5']:.2f} | – | – | – |"
    )
    dense = {r["model"]: r["seconds_per_image"] for r in rows if r["protocol"] == "multi"}
    crops = {r["model"]: r["seconds_per_image"] for r in rows if r["protocol"] == "multicrop"}
    for m in dense.keys() & crops.keys():
        lines.append(
            f"\n{m}: 150-crop evaluation takes {crops[m] / dense[m]:.1f}x the time of dense "
            "evaluation at the same three scales (Sec. 3.2 argues dense is cheaper)."
        )
    return "\n".join(lines) + "\n"


VAL_IMAGES = 50_000  # ILSVRC-2012's validation set


def main(cfg: Config) -> list[dict] | None:
    resolve_models(cfg)  # one weights source per --model, checked before any data is read
    images, labels = load_data(cfg)
    nets = build_nets(cfg.models, cfg.weights, width=cfg.width, fc_dim=cfg.fc_dim)
    names = [n.config for n in nets]  # a weights file without --model says which net it holds
    cfg.jitter = cfg.jitter or paper_jitter(nets)
    rows, posteriors = evaluate.run_protocols(
        dict(zip(names, nets)),
        images,
        labels,
        protocols=cfg.protocols,
        jitter=cfg.jitter,
        batch_size=cfg.batch_size,
        device=cfg.device,
        precision=cfg.precision,
    )
    if not is_main_process():
        return None
    out = cfg.out or Path("runs") / f"ilsvrc_{'_'.join(names)}"
    out.mkdir(parents=True, exist_ok=True)
    reasons = not_comparable(cfg, nets, images=len(labels))
    k = nets[0].num_classes
    chance = dict(classes=k, **{n: 100 * e for n, e in chance_errors(k).items()})  # percent
    text = report(cfg, rows, reasons, chance)
    (out / "report.md").write_text(text)
    payload = {"config": asdict(cfg), "images": len(labels), "rows": rows, "chance": chance}
    payload["precision"] = rows[0]["precision"]
    payload["plots"] = write_plots(out, rows, posteriors, labels)
    payload |= {"comparable": not reasons, "not_comparable": reasons}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    print(text)
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return rows


def paper_jitter(nets) -> tuple[int, int]:
    """Sec. 3.1's S in [256, 512], in ratio to the nets' training crop."""
    crop = training_crop(nets, "--jitter")
    return tuple(paper_scale(crop, s) for s in (256, 512))


def write_plots(out: Path, rows: list[dict], posteriors: dict, labels) -> list[str]:
    """protocols.png (every row, with chance) and per_class_error.png (the row of lowest top-1)."""
    best = min(rows, key=lambda r: r["top1"])
    P = posteriors[best["model"], best["protocol"]]
    plots.protocol_errors(out / "protocols.png", rows, classes=P.shape[1])
    err = evaluate.per_class_error(P, labels)
    title = f"top-1 error per class: {best['model']} {best['protocol']} ({len(labels)} images)"
    plots.class_errors(out / "per_class_error.png", err, chance=chance_topk(P.shape[1]), title=title)
    return ["protocols.png", "per_class_error.png"]


def not_comparable(cfg: Config, nets, *, images: int = VAL_IMAGES) -> list[str]:
    """Why this run differs from the protocols of Tables 3-6 (``images``: how many were
    evaluated); empty when it does not."""
    rows = [plots.paper_name([c]) for c in ("C", "D", "E")]  # the nets of Tables 3-6
    reasons = [r for n, w in zip(nets, cfg.weights) for r in plots.deviations([n], [w], rows=rows)]
    if tuple(cfg.jitter or (256, 512)) != (256, 512):  # None: the paper's, at the nets' crop
        reasons.append(f"--jitter {cfg.jitter[0]} {cfg.jitter[1]} (the paper's tables: 256 512)")
    if cfg.max_images:
        reasons.append(f"--max-images {cfg.max_images} (a quick run on part of the data)")
    elif images != VAL_IMAGES:  # a partial (or other) validation folder
        reasons.append(
            f"{images} images, not the {VAL_IMAGES:,} of ILSVRC-2012 val: "
            f"--data {cfg.data} is not the whole set"
        )
    return reasons


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_script(main, config_from_args(get_args_parser().parse_args()))
