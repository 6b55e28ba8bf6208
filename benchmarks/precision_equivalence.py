"""bf16 against fp32 on a trained net: the demo's source net on the demo's target and source val.

    python benchmarks/precision_equivalence.py --weights runs/demo/source-s0/final.safetensors \
        --data runs/demo/data

The margins are fixed here, before the run: VOC-protocol mAP within +-MAP_MARGIN points and
top-1 / top-5 error within +-ERR_MARGIN points, each judged by ``vggfeat.stats.tost`` (one net,
so the noise is the test images', by a paired bootstrap of both precisions' scores); descriptors
are reported by their minimum and median cosine to fp32 and their largest relative difference
(|bf16 - fp32| / max |fp32| of the row). For every layer of appendix B's one pass (pool5, fc6,
fc7: the descriptors, each L2-normalised, mean over the demo's Q) and for the posteriors
(dense, the same Q, on the source's val split): top-1 agreement of the argmax. Writes
``<out>/results.json`` and prints one table. bf16 is emulated on CPUs without AMX or
avx512_bf16: slow, so the demo's small data is the right size.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggfeat.cli.common import run_script
from vggfeat.options import add_options, from_args, option

MAP_MARGIN, ERR_MARGIN = 0.5, 1.0  # points, stated before the run
LAYERS = ("pool5", "fc6", "fc7")


@dataclass(kw_only=True)
class Config:
    weights: Path = option(
        help="a trained net's .safetensors (the demo's: <demo>/source-s0/final.safetensors)"
    )
    data: Path = option(help="the demo's data folder (VOCdevkit/ and source/val/ inside)")
    precision: str = option("bf16", choices=["bf16", "fp16"], help="the precision set against fp32")
    boot: int = option(1000, help="bootstrap replicates over the test images")
    out: Path = option(Path("runs/precision_equivalence"), help="folder of results.json")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, Config)
    return p


def _descriptor_figures(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rel = np.abs(b - a).max(1) / np.abs(a).max(1)
    return dict(
        min_cosine=float(cos.min()), median_cosine=float(np.median(cos)), max_rel_diff=float(rel.max())
    )


def main(cfg: Config) -> dict:
    import vggfeat
    from vggfeat import evaluate
    from vggfeat.data import voc
    from vggfeat.evaluation import stats, svm
    from vggfeat.evaluation.paper import VOC_Q
    from vggfeat.experiments.appendix_b import load_target, voc_result
    from vggfeat.nets.models import paper_scales

    if not cfg.weights.is_file():
        raise FileNotFoundError(
            f"--weights {cfg.weights}: no such file; run the demo first (python -m vggfeat.demo)"
        )
    devkit, val = cfg.data / "VOCdevkit", cfg.data / "source" / "val"
    if not devkit.is_dir() or not val.is_dir():
        raise FileNotFoundError(f"--data {cfg.data}: expected the demo's VOCdevkit/ and source/val/ inside")
    net = vggfeat.vgg(None, weights=str(cfg.weights))
    data = load_target(devkit)
    proto = voc.protocol(data)
    qs = list(paper_scales(net.crop, VOC_Q))
    images, y, classes = evaluate.labels_of(val)
    y = evaluate.net_labels(y, classes, net)
    dense_qs = list(paper_scales(net.crop, (256, 384, 512)))
    runs, seconds = {}, {}
    for p in ("fp32", cfg.precision):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulated on this CPU: it says so
            X = vggfeat.extract(data.images, model=net, scales=qs, layer=LAYERS, progress=False, precision=p)
            P = evaluate.posteriors(net, images, scales=dense_qs, progress=False, precision=p)
        seconds[p] = time.perf_counter() - t0
        runs[p] = dict(X=X, P=P, voc={n: voc_result(X[n], data, proto) for n in LAYERS})
    a, b = runs["fp32"], runs[cfg.precision]
    test = data.labels[proto.test]
    metric = svm.map_metric(proto.ap)
    layers = {}
    for n in LAYERS:
        ra, rb = a["voc"][n], b["voc"][n]
        boot = 100 * stats.paired_bootstrap(metric, rb.scores, ra.scores, test, n=cfg.boot)
        v = stats.tost([100 * rb.map], [100 * ra.map], margin=MAP_MARGIN, paired=True, boot=boot,
                       claim=f"{cfg.precision} VOC mAP ({n}) = fp32")  # fmt: skip
        layers[n] = _descriptor_figures(a["X"][n], b["X"][n]) | dict(
            map_fp32=100 * ra.map, map_other=100 * rb.map, C_fp32=ra.C, C_other=rb.C, verdict=v.as_dict()
        )
    post = dict(top1_agreement=float((a["P"].argmax(1) == b["P"].argmax(1)).mean()), images=len(y))
    for k in (1, 5):
        wrong = {
            p: ~(np.argsort(-r["P"], 1, kind="stable")[:, :k] == y[:, None]).any(1) for p, r in runs.items()
        }
        boot = 100 * stats.paired_bootstrap(
            lambda w, _: w.mean(), wrong[cfg.precision], wrong["fp32"], y, n=cfg.boot
        )
        v = stats.tost([100 * wrong[cfg.precision].mean()], [100 * wrong["fp32"].mean()], margin=ERR_MARGIN,
                       paired=True, boot=boot, claim=f"{cfg.precision} top-{k} error = fp32")  # fmt: skip
        post[f"top{k}"] = dict(
            fp32=100 * wrong["fp32"].mean(), other=100 * wrong[cfg.precision].mean(), verdict=v.as_dict()
        )
    res = dict(weights=str(cfg.weights), precision=cfg.precision, scales=qs, dense_scales=dense_qs,
               margins=dict(map_points=MAP_MARGIN, error_points=ERR_MARGIN), voc=dict(
                   images=len(data.images), test=len(proto.test), ap=proto.ap), layers=layers,
               posteriors=post, seconds=seconds)  # fmt: skip
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    report(cfg, res)
    print(f"seconds: {seconds}")
    return res


def _verdict(v: dict) -> str:
    lo, hi = v["ci95"]
    return f"{v['verdict']} (effect {v['effect']:+.2f}, 95% CI {lo:+.2f}..{hi:+.2f}, TOST p {v['p']:.3g})"


def report(cfg: Config, res: dict) -> None:
    p, post = cfg.precision, res["posteriors"]
    print(f"{cfg.weights}: {p} vs fp32, Q = {res['scales']}; {res['voc']['test']} VOC test images")
    head = f"{'layer':6s} {'min cos':>9s} {'med cos':>9s} {'max rel':>8s} {'mAP fp32':>8s}"
    print(f"{head} {'mAP ' + p:>9s}  verdict")
    for n, r in res["layers"].items():
        print(
            f"{n:6s} {r['min_cosine']:9.6f} {r['median_cosine']:9.6f} {r['max_rel_diff']:8.4f} "
            f"{r['map_fp32']:8.2f} {r['map_other']:9.2f}  {_verdict(r['verdict'])}"
        )
    print(f"posteriors on {post['images']} val images: top-1 agreement {post['top1_agreement']:.4f}")
    for k in (1, 5):
        r = post[f"top{k}"]
        print(f"top-{k} error fp32 {r['fp32']:.2f}%, {p} {r['other']:.2f}%: {_verdict(r['verdict'])}")


if __name__ == "__main__":
    run_script(main, from_args(Config, get_args_parser().parse_args()))
