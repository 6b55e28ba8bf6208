"""What a training run shows: validation loss and chance levels in the log and on curves.png
(redrawn every epoch, a resume marked), log lines that never continue the progress bar's line,
no Accelerate INFO lines per checkpoint, and Ctrl-C under ``accelerate launch`` as one line."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_train import RECIPE, REPO, TINY, _args, _env, write_imagefolder

import vggfeat
from vggfeat.data.decode import open_image
from vggfeat.train import Interrupted, TrainConfig, train
from vggfeat.train.transforms import eval_transform

RED, GREY = (214, 39, 40), (128, 128, 128)  # matplotlib's tab:red (resume), the chance line


def _has_colour(png, rgb) -> bool:
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return bool((np.abs(a - rgb).sum(-1) < 30).any())


def _val_loss_by_hand(run, data, cfg) -> float:
    """Cross-entropy of the final weights on val/, centre crop at Q, written from the pieces."""
    net = vggfeat.vgg(weights=str(run / "final.safetensors")).eval()
    t = eval_transform(crop_size=cfg.crop_size, scale=cfg.eval_scale())
    classes = sorted(p.name for p in (data / "val").iterdir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((data / "val" / c).iterdir())]
    x = torch.stack([t(open_image(f)) for f, _ in files])
    with torch.no_grad():
        logits = net(net.preprocess.apply(x))
    return float(F.cross_entropy(logits, torch.tensor([k for _, k in files])))


def test_rows_carry_val_loss_and_chance_and_the_curves_are_drawn_each_epoch(tmp_path, monkeypatch):
    data = write_imagefolder(tmp_path / "d", n_train=4)  # 12 images, 3 classes: 3 steps of 4
    cfg = TrainConfig(name="r", data=str(data), output_dir=str(tmp_path / "runs"), **TINY)
    cfg = replace(cfg, batch_size=4, epochs=2, step_delay=0.001, checkpoint_every=1)
    run = tmp_path / "runs" / "r"
    # Ctrl-C in the second epoch: one line says where, and the first epoch's curves exist
    real_sleep, calls = time.sleep, []

    def sleep(s):
        calls.append(s)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real_sleep(s)

    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(
        Interrupted, match=r"epoch 1 of 2, step 2 of 3 .* --resume continues from step_00000004"
    ):
        train(cfg)
    monkeypatch.setattr(time, "sleep", real_sleep)
    assert _has_colour(run / "curves.png", GREY) and not _has_colour(run / "curves.png", RED)
    train(replace(cfg, resume=True))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and "resumed_at_step" in rows[1]
    for r in rows:
        assert r["chance_top1_err"] == pytest.approx(2 / 3) and r["chance_top5_err"] == 0.0  # 3 classes
    assert rows[-1]["val_loss"] == pytest.approx(_val_loss_by_hand(run, data, cfg), rel=1e-4)
    assert _has_colour(run / "curves.png", RED)  # the resume is marked


def _launch(n: int, *args, **popen):
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
    ]
    cmd += ["--dynamo_backend", "no", "--multi_gpu" if n > 1 else "--cpu", "--num_processes", str(n)]
    cmd += ["--main_process_port", str(_free_port()), str(RECIPE), *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), text=True, **popen)


def _free_port() -> int:
    from test_train import _free_port as port

    return port()


@pytest.mark.slow
def test_log_lines_start_their_own_line_and_checkpoints_are_quiet(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=4)
    common = {k: v for k, v in TINY.items() if k != "progress"}
    args = _args(data, tmp_path / "runs", "r", **common, batch_size=4, epochs=2, checkpoint_every=2)
    args.remove("--no-progress")
    with open(tmp_path / "log.txt", "w") as log:  # output to a file, as under nohup or a scheduler
        assert _launch(1, *args, stdout=log, stderr=subprocess.STDOUT).wait(timeout=300) == 0
    text = (tmp_path / "log.txt").read_text()
    assert "top1_err=" in text and "epoch 1:" in text  # the bar labels the error as one
    (epoch_line,) = [x for x in text.splitlines() if " INFO epoch 1: " in x]
    assert '"chance_top1_err": 0.66667' in epoch_line and '"val_loss": ' in epoch_line  # 3 classes
    for line in text.split("\n"):
        shown = line.split("\r")[-1].strip()  # what a terminal, or cat, shows of the line
        if " INFO " in shown or " WARNING " in shown:
            assert shown[:2].isdigit(), line  # the log line starts with its time, not after the bar
    assert "Saving current state" not in text and "Model weights saved" not in text


@pytest.mark.slow
def test_ctrl_c_under_accelerate_launch_is_one_line_and_resume_finishes(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=8)  # 24 images: 6 steps of 4 per epoch
    common = {k: v for k, v in TINY.items() if k != "progress"}
    args = _args(data, tmp_path / "runs", "r", **common, batch_size=4, epochs=2, checkpoint_every=2)
    p = _launch(
        2,
        *args,
        "--step-delay",
        "0.3",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ckpts = tmp_path / "runs" / "r" / "checkpoints"
    deadline = time.time() + 240
    while not list(ckpts.glob("step_*")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: every process of the group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if "interrupted at epoch" in x]  # once, by the main process
    assert "--resume continues from step_" in line
    ours = [x for x in err.splitlines() if x.startswith("[rank")]
    assert len(ours) <= 2, ours  # at most a line per process
    p = _launch(2, *args, "--resume", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert (tmp_path / "runs" / "r" / "final.safetensors").exists()


def test_the_interrupt_message_counts_steps_within_the_epoch(tmp_path):
    from vggfeat.train.console import interrupted

    msg = lambda step: str(interrupted(epoch_steps=6, step=step, epochs=3, checkpoints=tmp_path))
    assert "epoch 0 of 3, step 6 of 6 in it (step 6 overall)" in msg(6)  # in epoch 0's validation
    assert "epoch 1 of 3, step 1 of 6 in it (step 7 overall)" in msg(7)
    assert "starts over: no checkpoint was written yet" in msg(0)
