"""The paper in miniature: the judging of its claims on scripted numbers, the plan of runs, the per-scale
posteriors against vggfeat.evaluate, and benchmarks/paper_in_miniature.py --quick end to end
(report format, the Sec. 3.1 init chain in the saved weights, a rerun that recomputes nothing)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image, script

import vggfeat
from vggfeat import evaluate, stats
from vggfeat.miniature import QUICK, MiniatureConfig, judge, plan
from vggfeat.miniature.measure import posteriors
from vggfeat.miniature.runs import train_config
from vggfeat.models import conv_module

# --- verdicts on scripted numbers -----------------------------------------------------------------


def _systems(errors: dict, n: int = 600) -> dict:
    """Scripted results: per system, one result per seed whose first ``round(e * n)`` images are
    misses (so the systems' misses overlap as much as possible)."""
    out = {}
    for key, per_seed in errors.items():
        out[key] = []
        for e in per_seed:
            wrong = np.arange(n) < round(e * n)
            out[key].append(dict(wrong=wrong, value=100 * wrong.mean(), top5=0.0))
    return out


def test_judge_uses_the_test_each_claim_calls_for():
    systems = _systems(
        {
            ("A-fixed", "single"): [0.600, 0.605],
            ("A-LRN-fixed", "single"): [0.605, 0.610],  # LRN: no gain, well inside its 2-point margin
            ("B-fixed", "single"): [0.40, 0.41],  # far better than A
            ("C-fixed", "single"): [0.30],  # better than B, but one seed: training noise unknown
            ("C-jitter", "single"): [0.30, 0.32],
            ("C-jitter", "multi"): [0.33, 0.35],  # worse than single Q on both seeds
        }
    )
    rows = {r["claim"]: r for r in judge(systems, test_labels=None, n_boot=300)}
    assert len(rows) == 5  # claims whose systems were not measured are left out
    lrn = rows["LRN does not help (A-LRN vs A)"]
    assert lrn["verdict"] == "equivalent" and lrn["margin"] == 2.0 and "TOST margin ±2" in lrn["test"]
    b_vs_a = rows["depth: B (13 layers) beats A (11)"]
    assert b_vs_a["verdict"] == "holds" and b_vs_a["effect"] == pytest.approx(19.75)
    assert b_vs_a["paper_gain"] == pytest.approx(0.9) and "Welch's t, 2 vs 2 seeds" in b_vs_a["test"]
    # Welch's t on the seeds plus the variance of a paired bootstrap of the per-image misses
    misses = {k: [r["wrong"] for r in systems[(k, "single")]] for k in ("A-fixed", "B-fixed")}
    boot = stats.paired_bootstrap(lambda w, _: 100 * w.mean(), misses["A-fixed"], misses["B-fixed"],
                                  np.zeros(600), n=300)  # fmt: skip
    want = stats.welch([60.0, 60.5], [40.0, 41.0], claim="B > A", boot=boot)
    assert b_vs_a["ci95"] == pytest.approx(list(want.ci95)) and b_vs_a["p"] == pytest.approx(want.p)
    c_vs_b = rows["depth: C (16, 1x1) beats B (13)"]
    assert c_vs_b["verdict"] == "inconclusive" and "training noise unknown" in c_vs_b["test"]
    assert c_vs_b["effect"] == pytest.approx(10.5) and c_vs_b["ci95"][0] > 0  # from the bootstrap alone
    jitter = rows["scale jittering helps: C"]  # different nets, C-fixed with one seed: not judged
    assert (
        jitter["verdict"] == "inconclusive" and jitter["p"] < 0.05 and jitter["effect"] == pytest.approx(-1)
    )
    multi = rows["multi-scale testing helps: C"]  # two readings of the same nets: paired
    assert multi["verdict"] == "does not hold" and "paired t over 2 seeds" in multi["test"]
    assert multi["effect"] == pytest.approx(-3.0)
    ps = sorted(r["p"] for r in rows.values())
    holm = sorted(r["p_holm"] for r in rows.values())
    assert holm[0] == pytest.approx(min(1, 5 * ps[0])) and all(h >= p for h, p in zip(holm, ps))


# --- plan and posteriors --------------------------------------------------------------------------


def test_plan_follows_sec_3_1_and_the_paper_scales():
    cfg = MiniatureConfig(seeds=(0, 1), deep_seeds=(0,))
    nets = plan(cfg)
    names = [n.name for n in nets]
    for n in nets:  # every start is trained before the nets it initialises
        assert n.start is None or names.index(n.start) < names.index(n.name)
    by = {n.name: n for n in nets}
    assert by["A-fixed-s1"].start is None and by["A-LRN-fixed-s1"].start is None
    assert by["B-fixed-s1"].start == "A-fixed-s1"
    assert [by[f"{c}-fixed-s0"].start for c in "CDE"] == ["A-fixed-s0"] * 3
    assert [by[f"{c}-jitter-s0"].start for c in "CDE"] == [f"{c}-fixed-s0" for c in "CDE"]
    assert by["B-5x5-fixed-s0"].start is None and by["B-5x5-fixed-s0"].epochs == cfg.epochs + cfg.deep_epochs
    assert by["D-jitter-s0"].lr == pytest.approx(cfg.lr / 10)
    fixed, jitter = (train_config(cfg, by[n], Path("src")) for n in ("D-fixed-s0", "D-jitter-s0"))
    assert (fixed.scale, fixed.scale_jitter) == (73, None)  # 256 * 64 / 224
    assert (jitter.scale, jitter.scale_jitter) == (None, (73, 146))
    assert fixed.val_split == "holdout" and fixed.init_from.endswith("nets/A-fixed-s0/final.safetensors")


def test_per_scale_posteriors_equal_evaluate_posteriors(tmp_path):
    torch.manual_seed(0)
    model = vggfeat.vgg("A", width=1 / 16, fc_dim=16, num_classes=5, crop=32).eval()
    weights = vggfeat.save_weights(model, tmp_path / "net" / "final.safetensors")
    images = [random_image(40 + 8 * i, 48, seed=i) for i in range(3)]
    cfg = replace(QUICK, out=tmp_path, progress=False)
    for views, mode in (("full", "dense"), ("grid", "multicrop")):
        P = posteriors(cfg, weights, images, views, (32, 40))
        assert P.shape == (3, 2, 5)
        want = evaluate.posteriors(model, images, scales=(32, 40), mode=mode, progress=False)
        np.testing.assert_allclose(P.mean(axis=1), want, atol=1e-6)
        np.testing.assert_allclose(
            P[:, 1], evaluate.posteriors(model, images, scales=(40,), mode=mode, progress=False), atol=1e-6
        )


# --- --quick end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run at lr 0: training leaves every weight as initialised, so the saved
    weights show what the init chain copied."""
    out = tmp_path_factory.mktemp("miniature")
    script("paper_in_miniature").main(["--quick", "--lr", "0", "--out", str(out), "--no-progress"])
    return out


@pytest.mark.slow
def test_quick_writes_the_report_the_results_and_the_plots(quick):
    results = json.loads((quick / "results.json").read_text())
    md = (quick / "report.md").read_text()
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Table 11", "Claims"):
        assert f"## {title}" in md
    claims = results["claims"]
    assert len(claims) == 20  # every claim of the paper was measured
    for c in claims:
        assert c["verdict"] in stats.VERDICTS and f"| {c['claim']} |" in md
        assert c["p_holm"] is None or c["p"] is None or c["p_holm"] >= c["p"]
    t3 = {r["net"]: r for r in results["tables"]["table3"]}
    assert set(t3) == {"A-fixed", "A-LRN-fixed", "B-fixed", "B-5x5-fixed", *(f"{c}-fixed" for c in "CDE"),
                       *(f"{c}-jitter" for c in "CDE"), "D-fixedft"}  # fmt: skip
    assert (t3["D-jitter"]["S"], t3["D-jitter"]["Q"]) == ([37, 73], 55)  # crop 32: S in [256, 512] * 32/224
    assert t3["A-fixed"]["paper"] == [29.6, 10.4]
    assert [r["net"] for r in results["tables"]["table11"]] == ["A", "D", "E", "D&E"]
    for png in ("claims.png", "table3.png", "protocols.png", "transfer.png"):
        assert (quick / png).read_bytes()[:4] == b"\x89PNG"


def _net(path):
    return vggfeat.vgg(None, weights=str(path))


@pytest.mark.slow
def test_init_chain_copies_a_into_the_deeper_nets(quick):
    nets = quick / "nets"
    a = _net(nets / "A-fixed-s0" / "final.safetensors")
    for c in "BCDE":
        deep = _net(nets / f"{c}-fixed-s0" / "final.safetensors")
        pairs = [
            (conv_module(deep, n), conv_module(a, n)) for n in ("conv1_1", "conv2_1", "conv3_1", "conv3_2")
        ]
        pairs += [(deep.classifier[i], a.classifier[i]) for i in (0, 3, 6)]
        for d, s in pairs:
            torch.testing.assert_close(d.weight, s.weight, rtol=0, atol=0)
            torch.testing.assert_close(d.bias, s.bias, rtol=0, atol=0)
        # A's later convs are not copied (Sec. 3.1): the deep net's keep their random init
        for n in ("conv4_1", "conv5_1"):
            assert not torch.equal(conv_module(deep, n).weight, conv_module(a, n).weight)
        if c in "CDE":  # the jittered net starts from all layers of its fixed-S net
            jit = _net(nets / f"{c}-jitter-s0" / "final.safetensors")
            for (n, p), q in zip(deep.named_parameters(), jit.parameters()):
                torch.testing.assert_close(q, p, rtol=0, atol=0, msg=n)


@pytest.mark.slow
def test_quick_rerun_recomputes_nothing(quick, caplog):
    made = {p: p.stat().st_mtime_ns for p in quick.rglob("*") if p.suffix in (".safetensors", ".npz")}
    with caplog.at_level("INFO", logger="vggfeat"):
        script("paper_in_miniature").main(["--quick", "--lr", "0", "--out", str(quick), "--no-progress"])
    assert {p: p.stat().st_mtime_ns for p in made} == made
    assert ": training (" not in caplog.text and "posteriors at Q" not in caplog.text
    assert caplog.text.count(": reusing ") == len(plan(QUICK))
    assert ": 0 of 40 rows present" not in caplog.text  # descriptors from the feature stores
