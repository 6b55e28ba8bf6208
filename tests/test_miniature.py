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
from vggfeat import evaluate
from vggfeat.evaluation import stats
from vggfeat.experiments import toy
from vggfeat.experiments.miniature import QUICK, MiniatureConfig, check, judge, plan
from vggfeat.experiments.miniature.measure import posteriors
from vggfeat.experiments.miniature.runs import stamp_folder, train_config

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
            ("A-LRN-fixed", "single"): [0.605, 0.610],  # LRN: no gain, well inside its 3-point margin
            ("B-fixed", "single"): [0.40, 0.41],  # far better than A
            ("B-fromA-fixed", "single"): [0.40, 0.41],
            ("C-fixed", "single"): [0.30],  # better than B, but one seed: training noise unknown
            ("C-fixedft", "single"): [0.30],
            ("C-jitter", "single"): [0.30, 0.32],
            ("C-jitter", "multi"): [0.33, 0.35],  # worse than single Q on both seeds
        }
    )
    rows = {r["claim"]: r for r in judge(systems, test_labels=None, n_boot=300)}
    assert len(rows) == 5  # claims whose systems were not measured are left out
    lrn = rows["LRN does not help: A-LRN ≈ A"]
    assert lrn["verdict"] == "equivalent" and lrn["margin"] == 3.0 and "TOST margin ±3" in lrn["test"]
    assert lrn["differs"] == "a local response normalisation layer"
    assert lrn["per_seed"] == [pytest.approx([60.5, 61.0]), pytest.approx([60.0, 60.5])]
    b_vs_a = rows["depth: B (13 layers) beats A (11)"]
    assert b_vs_a["verdict"] == "holds" and b_vs_a["effect"] == pytest.approx(19.75)
    assert b_vs_a["paper_gain"] == pytest.approx(0.9) and "Welch's t, 2 vs 2 seeds" in b_vs_a["test"]
    # Welch's t on the seeds plus the variance of a paired bootstrap of the per-image misses
    misses = {k: [r["wrong"] for r in systems[(k, "single")]] for k in ("A-fixed", "B-fixed")}
    boot = stats.paired_bootstrap(lambda w, _: 100 * w.mean(), misses["A-fixed"], misses["B-fixed"],
                                  np.zeros(600), n=300)  # fmt: skip
    want = stats.welch([60.0, 60.5], [40.0, 41.0], claim="B > A", boot=boot)
    assert b_vs_a["ci95"] == pytest.approx(list(want.ci95)) and b_vs_a["p"] == pytest.approx(want.p)
    c_vs_b = rows["depth: C (16, 1x1) beats B (13), both from A"]
    assert c_vs_b["verdict"] == "inconclusive" and "training noise unknown" in c_vs_b["test"]
    assert "1 vs 2 seeds" in c_vs_b["test"] and c_vs_b["seeds"] == [1, 2]  # C's, then B's, as per_seed
    assert c_vs_b["effect"] == pytest.approx(10.5) and c_vs_b["ci95"][0] > 0  # from the bootstrap alone
    jitter = rows["scale jittering helps: C"]  # different nets, C-fixedft with one seed: not judged
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


def test_plan_trains_the_nets_compared_on_one_schedule():
    cfg = MiniatureConfig(seeds=(0, 1, 2), deep_seeds=(0, 1))
    nets = plan(cfg)
    names = [n.name for n in nets]
    # A, A-LRN, B, B-5x5, B from A, C, D x 3 seeds; E and C, D, E fine-tuned twice x 2 deep seeds
    assert len(names) == len(set(names)) == 7 * 3 + 7 * 2
    assert "E-fixed-s2" not in names and "D-jitter-s2" not in names and "D-fixed-s2" in names
    assert names.index("E-fixedft-s0") < names.index("A-fixed-s1")  # seed by seed
    by = {n.name: n for n in nets}
    for n in nets:  # every start is trained before the nets it initialises
        assert n.start is None or names.index(n.start) < names.index(n.name)
    configs = {n.name: train_config(cfg, n, Path("src")) for n in nets}
    random = {k for k, n in by.items() if n.start is None}
    from_a = {k for k, n in by.items() if n.start and not n.finetune}
    tuned = {k for k, n in by.items() if n.finetune}
    assert random == {f"{c}-fixed-s{s}" for c in ("A", "A-LRN", "B", "B-5x5") for s in (0, 1, 2)}
    assert from_a == {f"{c}-fixed-s{s}" for c in ("B-fromA", "C", "D") for s in (0, 1, 2)} | {
        "E-fixed-s0",
        "E-fixed-s1",
    }
    assert all(by[k].start == f"A-fixed-s{by[k].seed}" for k in from_a)
    assert tuned == {f"{c}-{how}-s{s}" for c in "CDE" for how in ("jitter", "fixedft") for s in (0, 1)}
    # one factor per comparison: the nets of each group share every option but their net and seed,
    # and the nets from A train exactly as the nets from random weights
    shared = ("epochs", "lr", "warmup_epochs", "schedule", "batch_size", "batch_norm", "init", "dropout",
              "width", "fc_dim", "crop_size", "val_split")  # fmt: skip
    for group in (random | from_a, tuned):
        for option in shared:
            assert len({getattr(configs[k], option) for k in group}) == 1, option
    d0, a1 = configs["D-fixed-s0"], configs["A-fixed-s1"]
    assert (d0.epochs, d0.lr, d0.warmup_epochs, d0.schedule, d0.batch_size) == (120, 0.005, 6, "cosine", 16)
    assert (d0.batch_norm, d0.init, d0.dropout) == (False, "glorot-relu", 0.0)
    assert d0.init_from.endswith("nets/A-fixed-s0/final.safetensors") and a1.init_from is None
    assert (d0.seed, a1.seed) == (0, 1) and d0.val_split == "holdout"
    jitter, control = configs["D-jitter-s1"], configs["D-fixedft-s1"]
    for t in (jitter, control):  # Sec. 3.1: all layers from the fixed-S net, at lr / 10
        assert t.init_from.endswith("nets/D-fixed-s1/final.safetensors")
        assert (t.epochs, t.lr, t.warmup_epochs) == (40, 0.0005, 0)
    assert (d0.scale, d0.scale_jitter, control.scale, control.scale_jitter) == (73, None, 73, None)
    assert (jitter.scale, jitter.scale_jitter) == (None, (73, 146))  # [256, 512] * 64 / 224
    assert [n.name for n in plan(replace(cfg, nets=("A", "D")))] == [
        f"{c}-s{s}"
        for s in (0, 1, 2)
        for c in ("A-fixed", "D-fixed", "D-jitter", "D-fixedft")
        if c.endswith("fixed") or s < 2
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(seeds=()), "--seeds is empty"),
        (dict(deep_seeds=(0, 0)), "--deep-seeds 0 0: give distinct seeds"),
        (dict(seeds=(1, -1)), "--seeds 1 -1: give distinct seeds >= 0"),
        (dict(nets=("A", "F")), "--nets A F: give distinct nets of A, A-LRN"),
        (dict(nets=("B", "D")), "--nets B D: C, D and E start from A"),
        (dict(warmup_epochs=120), "--warmup-epochs 120"),
        (dict(init="he"), "--init he: choose one of glorot, glorot-relu, normal"),
        (dict(distractors=-1), "--distractors -1: give 0 or more"),
    ],
)
def test_options_that_cannot_make_a_run_are_refused_in_one_line(change, message):
    with pytest.raises(ValueError, match="^" + message.replace("-", "\\-")) as e:
        check(replace(MiniatureConfig(), **change))
    assert "\n" not in str(e.value)


def test_a_folder_of_a_run_with_other_options_is_refused_unless_fresh(tmp_path):
    cfg = replace(QUICK, out=tmp_path)
    stamp_folder(cfg)
    stamp_folder(replace(cfg, progress=False, parallel=1))  # options that do not change a result
    with pytest.raises(ValueError, match=r"--epochs 2 there, 3 here.*--fresh") as e:
        stamp_folder(replace(cfg, epochs=3))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    stamp_folder(replace(cfg, epochs=3, fresh=True))
    stamp_folder(replace(cfg, epochs=3))  # the folder now holds the new run


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
    """One --quick run."""
    out = tmp_path_factory.mktemp("miniature")
    script("paper_in_miniature").main(["--quick", "--out", str(out), "--no-progress"])
    return out


@pytest.mark.slow
def test_quick_writes_the_report_the_results_and_the_plots(quick):
    results = json.loads((quick / "results.json").read_text())
    md = (quick / "report.md").read_text()
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Table 11", "Claims"):
        assert f"## {title}" in md
    claims = results["claims"]
    assert len(claims) == 21  # every claim of the paper was measured
    for c in claims:
        assert c["verdict"] in stats.VERDICTS and f"| {c['claim']} |" in md
        assert c["p_holm"] is None or c["p"] is None or c["p_holm"] >= c["p"]
    t3 = {r["net"]: r for r in results["tables"]["table3"]}
    assert set(t3) == {"A-fixed", "A-LRN-fixed", "B-fixed", "B-5x5-fixed", "B-fromA-fixed",
                       *(f"{c}-{how}" for c in "CDE" for how in ("fixed", "jitter", "fixedft"))}  # fmt: skip
    assert (t3["D-jitter"]["S"], t3["D-jitter"]["Q"]) == ([37, 73], 55)  # crop 32: S in [256, 512] * 32/224
    assert t3["A-fixed"]["paper"] == [29.6, 10.4]
    assert [r["net"] for r in results["tables"]["table11"]] == ["A", "B-fromA", "D-fixed", "D", "E", "D&E"]
    assert set(results["final_holdout_err"]) == {n.name for n in plan(QUICK)}
    assert all(c["differs"] and len(c["per_seed"]) == 2 for c in claims)
    for png in ("claims.png", "table3.png", "protocols.png", "transfer.png", "curves.png"):
        assert (quick / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((quick / "data" / toy.MARKER).read_text())  # the source data the nets saw
    assert data["source_distractors"] == QUICK.distractors == 2 and data["source_train"] == QUICK.source_train
    assert f"{QUICK.distractors} objects of other classes" in md


@pytest.mark.slow
def test_quick_rerun_recomputes_nothing(quick, caplog):
    made = {p: p.stat().st_mtime_ns for p in quick.rglob("*") if p.suffix in (".safetensors", ".npz")}
    with caplog.at_level("INFO", logger="vggfeat"):
        script("paper_in_miniature").main(["--quick", "--out", str(quick), "--no-progress"])
    assert {p: p.stat().st_mtime_ns for p in made} == made
    assert ": training (" not in caplog.text and "posteriors at Q" not in caplog.text
    assert caplog.text.count(": reusing ") == len(plan(QUICK))
    assert ": 0 of 40 rows present" not in caplog.text  # descriptors from the feature stores


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds"], "argument --seeds: expected at least one argument"),
        (["--deep-seeds", "1", "1"], "--deep-seeds 1 1: give distinct seeds"),
        (["--nets", "A", "Z"], "--nets A Z: give distinct nets"),
    ],
)
def test_the_script_refuses_bad_options_in_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        script("paper_in_miniature").main([*argv, "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: " in err[-1] and message in err[-1]
    assert not (tmp_path / "run").exists()  # nothing was written
