"""ILSVRC-2012 validation error with the paper's test protocols (Sec. 3.2, Tables 3-6).

    python benchmarks/ilsvrc_eval.py --data ILSVRC2012/val --model D --weights D.safetensors \
        --model E --weights E.safetensors --protocols single,multi,multicrop,both,fusion

``--data``: an ImageFolder tree (``val/<wnid>/<image>.JPEG``, classes in sorted wnid order as
the training set) or a Hugging Face dataset saved with ``save_to_disk`` (``image`` and
``label`` columns; ``--split`` picks one split of a DatasetDict). Writes runs/<name>/report.md
and results.json: top-1/top-5 error beside the paper's, and seconds per image of each protocol.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import vggfeat
from vggfeat import evaluate

LAYOUT = """expected one of:
  an ImageFolder tree   VAL/<class>/<image>.JPEG   (ILSVRC2012 val sorted into class folders,
                        e.g. with the valprep.sh script from the PyTorch ImageNet example)
  a saved HF dataset    datasets.load_from_disk(VAL) with 'image' and 'label' columns
Nothing is downloaded: ImageNet requires registration at image-net.org."""


@dataclass
class Config:
    data: str
    models: list[str] = field(default_factory=lambda: ["D"])
    weights: list[str] = field(default_factory=list)
    protocols: tuple[str, ...] = evaluate.PROTOCOLS
    jitter: tuple[int, int] = (256, 512)
    split: str = "validation"
    max_images: int | None = None
    batch_size: int | None = None
    device: str | None = None
    out: Path | None = None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder val tree or saved HF dataset")
    p.add_argument("--model", dest="models", action="append", help="config letter; repeat for fusion")
    p.add_argument(
        "--weights", action="append", required=True, help="weights file or 'torchvision', per --model"
    )
    p.add_argument("--protocols", default=",".join(evaluate.PROTOCOLS), help="comma-separated subset")
    p.add_argument("--jitter", type=int, nargs=2, default=[256, 512], help="training scale range (sets Q)")
    p.add_argument("--split", default="validation", help="split of a saved DatasetDict")
    p.add_argument("--max-images", type=int, help="first N images only: quick run, not comparable")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.add_argument("--out", type=Path, help="output folder (default runs/ilsvrc_<models>)")
    return p


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


def report(cfg: Config, rows: list[dict]) -> str:
    quick = " — QUICK RUN (--max-images), not comparable with the paper" if cfg.max_images else ""
    lines = [
        f"# ILSVRC-2012 val, top-1 / top-5 error (%){quick}",
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
    dense = {r["model"]: r["seconds_per_image"] for r in rows if r["protocol"] == "multi"}
    crops = {r["model"]: r["seconds_per_image"] for r in rows if r["protocol"] == "multicrop"}
    for m in dense.keys() & crops.keys():
        lines.append(
            f"\n{m}: 150-crop evaluation takes {crops[m] / dense[m]:.1f}x the time of dense "
            "evaluation at the same three scales (Sec. 3.2 argues dense is cheaper)."
        )
    return "\n".join(lines) + "\n"


def main(cfg: Config) -> list[dict]:
    names = cfg.models
    if len(cfg.weights) != len(names):
        raise SystemExit(f"error: {len(names)} --model but {len(cfg.weights)} --weights; give one per model")
    images, labels = load_data(cfg)
    try:
        models = {n: vggfeat.vgg(n, weights=w) for n, w in zip(names, cfg.weights)}
    except vggfeat.WeightsError as e:
        raise SystemExit(f"error: {e}") from None
    rows = evaluate.run_protocols(
        models,
        images,
        labels,
        protocols=cfg.protocols,
        jitter=cfg.jitter,
        batch_size=cfg.batch_size,
        device=cfg.device,
    )
    out = cfg.out or Path("runs") / f"ilsvrc_{'_'.join(names)}"
    out.mkdir(parents=True, exist_ok=True)
    text = report(cfg, rows)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {"config": asdict(cfg), "images": len(labels), "rows": rows, "comparable": not cfg.max_images},
            indent=1,
            default=str,
        )
    )
    print(text)
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(
        Config(
            data=a.data,
            models=a.models or ["D"],
            weights=a.weights,
            protocols=tuple(p.strip() for p in a.protocols.split(",") if p.strip()),
            jitter=tuple(a.jitter),
            split=a.split,
            max_images=a.max_images,
            batch_size=a.batch_size,
            device=a.device,
            out=a.out,
        )
    )
