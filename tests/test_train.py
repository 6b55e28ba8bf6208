"""The Sec. 3.1 trainer: presets, schedule, init, mean RGB, learning, exact resume, 2 ranks = 1.

Data is written by the tests in the real layouts (ImageFolder tree, saved HF DatasetDict); the
recipe script is launched for real (accelerate launch, torchrun with two gloo ranks, SIGKILL).
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vggfeat
from vggfeat.errors import ConfigError, RunLocked
from vggfeat.nets.models import conv_module
from vggfeat.train import TrainConfig, build_model, plateau_schedule, train
from vggfeat.train.checkpoint import MARKER, complete_checkpoints, latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "train_imagenet.py"
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
TINY = dict(config="A", width=1 / 16, fc_dim=16, crop_size=32, scale=36, num_workers=0, progress=False)


def _images(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        for i in range(n_per_class):
            arr = np.array(colour)[None, None] + rng.normal(0, 20, (40, 48, 3))
            yield c, i, Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_imagefolder(root: Path, n_train=8, n_val=2, corrupt=False) -> Path:
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        for c, i, img in _images(n, seed):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i:03d}.png")
    if corrupt:
        (root / "train" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


def write_hf(root: Path, n_train=12, n_val=3) -> Path:
    import datasets

    names = [f"class{c}" for c in range(len(COLOURS))]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split, n, seed in (("train", n_train, 0), ("validation", n_val, 1)):
        rows = list(_images(n, seed))
        splits[split] = datasets.Dataset.from_dict(
            {"image": [r[2] for r in rows], "label": [r[0] for r in rows]}, features=feats
        )
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def _recipe():
    spec = importlib.util.spec_from_file_location("train_imagenet", RECIPE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env():
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "ACCELERATE_USE_CPU": "1",
    }


def _args(data, out, name, **kw):
    args = ["--data", str(data), "--output-dir", str(out), "--name", name, "--no-progress"]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else f"--no-{k.replace('_', '-')}")
        else:
            args += [flag, *map(str, v if isinstance(v, (tuple, list)) else [v])]
    return args


def _run(cmd, timeout=240):
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _weights(run: Path) -> dict:
    return load_file(str(run / "final.safetensors"))


# -- presets, schedule, init ---------------------------------------------------------------
def test_presets_resolve_to_the_papers_values():
    recipe = _recipe()
    args = recipe.get_args_parser().parse_args(["--preset", "D-384", "--data", "x"])
    d384 = recipe.config_from_args(args)
    assert (d384.batch_size, d384.momentum, d384.weight_decay, d384.epochs) == (256, 0.9, 5e-4, 74)
    assert (d384.lr, d384.scale, d384.config, d384.dropout) == (1e-3, 384, "D", 0.5)
    assert d384.init_weights() == Path("runs/D-256/final.safetensors")
    a = recipe.PRESETS["A-256"]
    assert (a.lr, a.fixed_scale(), a.init_weights(), a.crop_size, a.lighting) == (1e-2, 256, None, 224, 0.1)
    assert recipe.PRESETS["E-256"].init_weights() == Path("runs/A-256/final.safetensors")
    jit = recipe.PRESETS["D-jitter"]
    assert jit.scale_jitter == (256, 512) and jit.eval_scale() == 384 and jit.crop_size == 224
    assert jit.init_weights() == Path("runs/D-384/final.safetensors")
    # the start weights follow --output-dir; --init-from FILE replaces them
    args = recipe.get_args_parser().parse_args(["--preset", "E-384", "--data", "x", "--output-dir", "/o"])
    assert recipe.config_from_args(args).init_weights() == Path("/o/E-256/final.safetensors")
    args = recipe.get_args_parser().parse_args(["--preset", "E-384", "--data", "x", "--init-from", "w.pth"])
    assert recipe.config_from_args(args).init_weights() == Path("w.pth")
    # S keeps the paper's ratio to the crop unless given: 256 at 224, 73 at 64
    assert (
        TrainConfig(crop_size=64).fixed_scale() == 73
        and TrainConfig(crop_size=64, scale=80).fixed_scale() == 80
    )
    # flags override the preset
    args = recipe.get_args_parser().parse_args(
        ["--preset", "demo", "--data", "x", "--epochs", "2", "--no-flip"]
    )
    demo = recipe.config_from_args(args)
    assert demo.epochs == 2 and demo.flip is False and demo.config in ("A", "B") and demo.width <= 1 / 8


def test_plateau_schedule_drops_after_patience_and_at_most_three_times():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-2)
    sched = plateau_schedule(opt, lr=1e-2, patience=1, drops=3)
    # accuracy per epoch; with patience 1 a drop follows the 2nd epoch without improvement
    acc = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    lrs = []
    for a in acc:
        sched.step(a)
        lrs.append(opt.param_groups[0]["lr"])
    # hand-computed: bad epochs at 2, 3 (drop after 3), 5, 6 (drop after 6), 7, 8 (drop after 8),
    # then the floor 1e-5 is reached: no fourth drop however long the plateau lasts
    expected = [1e-2] * 3 + [1e-3] * 3 + [1e-4] * 2 + [1e-5] * 5
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


def test_annealing_schedules_by_hand_and_through_the_optimiser():
    from vggfeat.train.schedule import Schedule, lr_factor

    # hand-computed: 8 steps, 2 of warm-up from lr/10; cosine over the 6 others to lr/100
    cos = [lr_factor(s, kind="cosine", total=8, warmup=2) for s in range(8)]
    t = np.arange(6) / 5
    np.testing.assert_allclose(cos, [0.1, 0.55, *(0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t)))])
    step = [lr_factor(s, kind="step", total=8) for s in range(8)]
    assert step == [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]  # /10 at half, /100 in the last quarter
    # through an optimiser, per step, as the trainer drives it: lr/100 at the last step
    for kind in ("cosine", "step"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        sched = Schedule(opt, kind=kind, lr=0.02, epochs=4, steps_per_epoch=5, warmup_epochs=1)
        lrs = []
        for _ in range(20):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.after_step()
            sched.after_epoch(0.5)  # ignored: these schedules do not read validation
        assert lrs[0] == pytest.approx(0.002) and lrs[5] == pytest.approx(0.02)
        assert lrs[-1] == pytest.approx(0.0002)


def test_init_from_copies_first_four_convs_and_the_fc_layers(tmp_path):
    torch.manual_seed(0)
    a = vggfeat.vgg("A", num_classes=4, width=1 / 16, fc_dim=16)
    vggfeat.save_weights(a, tmp_path / "a.safetensors")
    cfg = TrainConfig(config="D", width=1 / 16, fc_dim=16, init_from=str(tmp_path / "a.safetensors"))
    torch.manual_seed(1)
    d = build_model(cfg, 4, (0.5, 0.5, 0.5))
    torch.manual_seed(1)
    fresh = build_model(TrainConfig(config="D", width=1 / 16, fc_dim=16), 4, (0.5, 0.5, 0.5))
    # Table 1: A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2; they land on D's
    # layers of the same names (Caffe copies by name); D's other convs keep their random init.
    copied = ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]
    for name in d.layers:
        if name.startswith("conv"):
            got, rand = conv_module(d, name).weight, conv_module(fresh, name).weight
            ref = conv_module(a, name).weight if name in copied else rand
            assert torch.equal(got, ref), name
    for i in (0, 3, 6):
        assert torch.equal(d.classifier[i].weight, a.classifier[i].weight)
    assert d.preprocess == vggfeat.Preprocess.mean_rgb((0.5, 0.5, 0.5))
    # same architecture: every layer (S = 384 from S = 256), from a run under --output-dir
    (tmp_path / "A-256").mkdir()
    vggfeat.save_weights(a, tmp_path / "A-256" / "final.safetensors")
    same = build_model(
        TrainConfig(config="A", width=1 / 16, fc_dim=16, output_dir=str(tmp_path), init_from_run="A-256"),
        4,
        (0, 0, 0),
    )
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in same.state_dict().items())


def test_latest_checkpoint_ignores_incomplete_folders(tmp_path):
    for name, marked in [("step_00000002", True), ("step_00000004", True), ("step_00000006", False)]:
        (tmp_path / name).mkdir()
        if marked:
            (tmp_path / name / MARKER).write_text("x")
    (tmp_path / ".tmp-step_00000008").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]
    assert latest_checkpoint(tmp_path / "missing") is None


# -- training runs -------------------------------------------------------------------------
@pytest.mark.slow
def test_learns_a_colour_task_from_a_saved_hf_dataset(tmp_path):
    data = write_hf(tmp_path / "hf")
    cfg = TrainConfig(
        name="learn",
        data=str(data),
        output_dir=str(tmp_path / "runs"),
        **{**TINY, "width": 0.5, "fc_dim": 32},
        dropout=0.0,
        batch_size=6,
        epochs=8,
        lr=0.05,
        lr_patience=1,
    )
    path = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "runs/learn/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    # A plain 11-layer net without batch norm learns slowly (why Sec. 3.1 pre-trains net A), but
    # the loss falls and validation accuracy ends well above chance (top-1 error 2/3).
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert rows[-1]["val_top1_err"] <= 0.34
    model = vggfeat.vgg(None, weights=path)  # rebuilds architecture and mean-RGB preprocessing
    # the paper's geometry at crop 32: fc6's kernel is 1 (32/32) and the weights carry the crop
    assert model.crop == 32 and model.classifier[0].in_features == model.out_channels
    assert not (tmp_path / "runs/learn/LOCK").exists()  # the run lock is released at the end
    assert model.preprocess.name == "mean-rgb" and model.meta["class_names"] == [
        f"class{c}" for c in range(3)
    ]
    assert (tmp_path / "runs/learn/curves.png").stat().st_size > 0
    from torchvision.models import vgg11

    with torch.device("meta"):  # torchvision's layout: same keys (a full-width run loads strictly)
        tv = vgg11(num_classes=3)
    assert set(load_file(str(path))) == set(tv.state_dict())


def test_val_dense_equals_the_evaluation_engine_on_the_final_model(tmp_path):
    from vggfeat import evaluate

    data = write_imagefolder(tmp_path / "d", n_train=2)
    cfg = TrainConfig(
        name="dense",
        data=str(data),
        output_dir=str(tmp_path / "runs"),
        **TINY,
        batch_size=6,
        epochs=1,
        val_dense=True,
        val_scale=224,
    )
    path = train(cfg)
    row = json.loads((tmp_path / "runs/dense/metrics.jsonl").read_text().splitlines()[-1])
    model = vggfeat.vgg(None, weights=path)
    images, labels, _ = evaluate.labels_of(data / "val")
    P = evaluate.posteriors(model, images, scales=(224,), progress=False)
    assert row["val_dense_top1_err"] == evaluate.topk_error(P, labels, 1)
    assert row["val_dense_top5_err"] == evaluate.topk_error(P, labels, 3)


def test_recipe_script_trains_one_epoch_end_to_end(tmp_path):
    """The everyday smoke path of training (the launched runs below are slow): the recipe started
    as a user starts it, one epoch of a width-1/16 net; what it saved is the net it validated."""
    from vggfeat import evaluate

    data = write_imagefolder(tmp_path / "d", n_train=2)
    out = tmp_path / "runs"
    common = {k: v for k, v in TINY.items() if k != "progress"}
    args = _args(data, out, "smoke", **common, batch_size=6, epochs=1, val_dense=True, val_scale=64)
    res = _run([sys.executable, str(RECIPE), *args])
    assert "final weights written to" in res.stderr
    (row,) = [json.loads(line) for line in (out / "smoke" / "metrics.jsonl").read_text().splitlines()]
    assert row["epoch"] == 0 and np.isfinite(row["train_loss"]) and row["skipped_images"] == 0
    model = vggfeat.vgg(None, weights=out / "smoke" / "final.safetensors")
    assert model.arch["config"] == "A" and model.crop == 32
    assert model.meta["class_names"] == [f"class{c}" for c in range(3)]
    assert model.preprocess.name == "mean-rgb"
    images, labels, _ = evaluate.labels_of(data / "val")
    P = evaluate.posteriors(model, images, scales=(64,), progress=False)
    assert row["val_dense_top1_err"] == evaluate.topk_error(P, labels, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "schedule", [{}, {"schedule": "cosine", "warmup_epochs": 1}, {"schedule": "step"}], ids=str
)
def test_resume_after_sigkill_mid_epoch_is_bit_exact(tmp_path, schedule):
    data = write_imagefolder(tmp_path / "d", n_train=6, corrupt=True)  # 18 images + 1 broken
    out = tmp_path / "runs"
    common = {**{k: v for k, v in TINY.items() if k != "progress"}, "batch_size": 2, "epochs": 2, **schedule}
    # reference: uninterrupted, launched through accelerate
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(RECIPE)]
    ref = _run(launch + _args(data, out, "ref", **common))
    assert "broken.png" in ref.stderr  # unreadable images are listed in the log
    # interrupted: SIGKILL once a checkpoint in the middle of epoch 1 exists (9 steps per epoch)
    killed = out / "killed"
    cmd = [sys.executable, str(RECIPE)] + _args(
        data, out, "killed", **common, checkpoint_every=2, keep=2, step_delay=0.25
    )
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (killed / "checkpoints" / "step_00000012" / MARKER).exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.safetensors").exists()
    ckpts = complete_checkpoints(killed / "checkpoints")
    assert 1 <= len(ckpts) <= 2  # keep=2 pruned the older ones
    # simulate a crash mid-save: a temporary folder and a final-named folder without marker
    (killed / "checkpoints" / ".tmp-step_00000098").mkdir()
    (killed / "checkpoints" / "step_00000099").mkdir()
    res = _run(
        [sys.executable, str(RECIPE)] + _args(data, out, "killed", **common, checkpoint_every=2, resume=True)
    )
    assert f"resumed from {ckpts[-1]}:" in res.stderr  # not from the unmarked step_00000099
    assert (
        f"taking over the lock of a run that is gone (host {socket.gethostname()}, pid {proc.pid}"
        in res.stderr
    )
    a, b = _weights(out / "ref"), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda run: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in ("time", "resumed_at_step")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows(out / "ref") == rows(killed)
    marks = [
        json.loads(line).get("resumed_at_step")
        for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    assert marks == [None, int(ckpts[-1].name.split("_")[1])]  # the resumed epoch is marked on curves.png
    assert [r["skipped_images"] for r in rows(killed)] == [1, 1]  # the broken file, each epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=8)  # 24 images: 3 steps of 8 per epoch
    out = tmp_path / "runs"
    common = {**{k: v for k, v in TINY.items() if k != "progress"}, "dropout": 0.0, "epochs": 2}
    common["scale_jitter"] = (36, 44)  # augmentation on: per-sample randomness must not depend on rank
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(RECIPE)]
    _run(torchrun + _args(data, out, "two", **common, batch_size=8, per_device_batch_size=4))
    _run([sys.executable, str(RECIPE)] + _args(data, out, "one", **common, batch_size=8))
    assert json.loads((out / "two" / "config.json").read_text())["num_processes"] == 2
    assert json.loads((out / "one" / "config.json").read_text())["num_processes"] == 1
    a, b = _weights(out / "one"), _weights(out / "two")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


# -- traps: options, start weights, compile, precision, dense validation, run lock -----------
def _bad(**kw):
    return TrainConfig(data="/nonexistent/data", **{**TINY, **kw})


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(crop_size=16), ["--crop-size 16", "multiple of 32"]),
        (dict(crop_size=48), ["--crop-size 48", "multiple of 32"]),
        (dict(scale=24), ["--scale 24", "at least 32"]),
        (dict(scale=None, scale_jitter=(28, 40)), ["--scale-jitter SMIN 28", "at least 32"]),
        (dict(scale_jitter=(40, 36)), ["--scale-jitter 40 36", "SMIN"]),
        (dict(val_scale=30), ["--val-scale 30", "at least 32"]),
        (dict(batch_size=6, per_device_batch_size=4), ["--batch-size 6", "multiple of 1 x --per-device"]),
        (dict(init_from="/nonexistent/w.pth"), ["--init-from /nonexistent/w.pth"]),
        (dict(schedule="linear"), ["--schedule linear", "plateau, step, cosine"]),
        (dict(warmup_epochs=1), ["--warmup-epochs", "--schedule step or cosine"]),
        (dict(schedule="cosine", warmup_epochs=3, epochs=3), ["--warmup-epochs 3", "below --epochs 3"]),
    ],
)
def test_options_that_cannot_work_fail_before_any_work_naming_the_option(kw, words):
    # /nonexistent/data: an error about the data would mean the check came too late
    with pytest.raises(ConfigError) as e:
        train(_bad(**kw))
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_preset_start_weights_resolve_under_output_dir_and_are_checked_first(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=1, n_val=1)
    recipe = _recipe()
    out = tmp_path / "out"
    args = recipe.get_args_parser().parse_args(
        ["--preset", "D-384", "--data", str(data), "--output-dir", str(out)]
    )
    with pytest.raises(SystemExit) as e:
        recipe.main(args)
    msg = str(e.value.code)
    expected = out / "D-256" / "final.safetensors"
    assert msg.startswith("error: ") and "\n" not in msg and str(expected) in msg and "--preset D-256" in msg
    assert not (data / "mean_rgb.json").exists() and not (out / "D-384").exists()  # no work done


def test_mixed_precision_defaults_to_accelerate_config(monkeypatch):
    from accelerate.state import AcceleratorState

    from vggfeat.train.setup import make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    try:
        for given, expected in [(None, "bf16"), ("no", "no")]:
            AcceleratorState._reset_state(reset_partial_state=True)
            acc, _ = make_accelerator(TrainConfig(batch_size=4, mixed_precision=given))
            assert acc.mixed_precision == expected
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_compiled_run_saves_plain_weights_and_prefixed_files_load(tmp_path, monkeypatch):
    import torch._dynamo

    # torch.compile's wrapper and key prefix without the compile time: dynamo runs eagerly
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    data = write_imagefolder(tmp_path / "d", n_train=1, n_val=1)
    cfg = TrainConfig(
        name="c", data=str(data), output_dir=str(tmp_path / "runs"), **TINY, batch_size=3, epochs=1
    )
    path = train(replace(cfg, compile=True))
    keys = list(load_file(str(path)))
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)
    model = vggfeat.vgg(None, weights=path)
    # a file saved from a compiled model (as older runs wrote) still starts the next run
    compiled = torch.compile(model)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    torch.save(compiled.state_dict(), tmp_path / "compiled.pth")
    same = build_model(replace(cfg, init_from=str(tmp_path / "compiled.pth")), 3, (0.5, 0.5, 0.5))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.state_dict().items())


def test_dense_validation_leaves_the_training_state_as_found(tmp_path):
    from vggfeat.train import Trainer

    data = write_imagefolder(tmp_path / "d", n_train=1, n_val=2)
    cfg = TrainConfig(
        name="v",
        data=str(data),
        output_dir=str(tmp_path / "runs"),
        **TINY,
        batch_size=3,
        val_dense=True,
        val_scale=64,
    )
    trainer = Trainer(cfg)
    try:
        model = trainer.model
        model.train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        fmt = model.features[0].weight.is_contiguous()
        rng = torch.get_rng_state()
        row = trainer._validate_dense()
        assert 0 <= row["val_dense_top1_err"] <= 1
        assert model.training and model.features[0].weight.is_contiguous() == fmt
        assert model.features[0].weight.device == trainer.acc.device
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        # the next dropout masks are the ones they would have been without the validation
        assert torch.equal(torch.get_rng_state(), rng)
    finally:
        trainer.lock.release()


def test_run_folder_in_use_is_refused_naming_the_holder_and_stale_locks_are_taken_over(tmp_path, caplog):
    from vggfeat.train.lock import RunLock

    data = write_imagefolder(tmp_path / "d", n_train=1, n_val=1)
    cfg = TrainConfig(
        name="r", data=str(data), output_dir=str(tmp_path / "runs"), **TINY, batch_size=3, epochs=1
    )
    holder = RunLock(cfg.run_dir())  # a live holder: this very process
    holder.acquire()
    for c in (cfg, replace(cfg, resume=True)):
        with pytest.raises(RunLocked) as e:
            train(c)
        msg = str(e.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "started" in msg
    assert not (data / "mean_rgb.json").exists()  # refused before the mean-RGB pass
    holder.release()
    # a lock left by a process that is gone (as by a killed run) is stale: taken over, logged
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}
    (cfg.run_dir() / "LOCK").write_text(json.dumps(lock))
    with caplog.at_level("WARNING", logger="vggfeat"):
        train(cfg)
    assert "taking over the lock" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert not (cfg.run_dir() / "LOCK").exists()  # released at the end of the run
