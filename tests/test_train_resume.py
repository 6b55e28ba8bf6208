"""Resume from the newest complete *and readable* checkpoint, refuse a resume that would not be
exact or would train another run, and refuse training that cannot train."""

import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from test_train import RECIPE, REPO, TINY, _env, write_imagefolder

from vggfeat.train import ConfigError, TrainConfig, train

RUN = dict(**TINY, batch_size=6, epochs=2, keep=3, dropout=0.5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A two-epoch run (one step per epoch, a checkpoint after each) and its final weights."""
    root = tmp_path_factory.mktemp("resume")
    data = write_imagefolder(root / "d", n_train=2)
    cfg = TrainConfig(name="ref", data=str(data), output_dir=str(root / "runs"), **RUN)
    ref = load_file(train(cfg))
    return cfg, ref


def copy_run(cfg, tmp_path, name="r"):
    shutil.copytree(cfg.run_dir(), tmp_path / name)
    return replace(cfg, name=name, output_dir=str(tmp_path), resume=True)


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def newest(cfg):
    return sorted((cfg.run_dir() / "checkpoints").glob("step_*"))[-1]


DAMAGES = {
    "model.safetensors missing": lambda c: (c / "model.safetensors").unlink(),
    "model.safetensors truncated": lambda c: (c / "model.safetensors").write_bytes(
        (c / "model.safetensors").read_bytes()[:300]
    ),
    "trainer_state.json empty": lambda c: (c / "trainer_state.json").write_text(""),
    "optimizer.bin missing": lambda c: (c / "optimizer.bin").unlink(),
    "optimizer.bin empty": lambda c: (c / "optimizer.bin").write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_newest_checkpoint_is_passed_over_with_a_warning(runs, tmp_path, caplog, damage):
    cfg, ref = runs
    r = copy_run(cfg, tmp_path)
    DAMAGES[damage](newest(r))
    final = train(r)  # before: FileNotFoundError (naming pytorch_model.bin), SafetensorError, ...
    assert "passing over checkpoint" in caplog.text and newest(r).name in caplog.text
    assert damage.split()[0] in caplog.text
    assert same(load_file(final), ref)  # resumed from the previous checkpoint: bit-exact


def test_a_missing_rng_state_is_an_error_unless_resume_inexact(runs, tmp_path, caplog):
    cfg, ref = runs
    r = copy_run(cfg, tmp_path)
    ckpts = sorted((r.run_dir() / "checkpoints").glob("step_*"))
    shutil.rmtree(ckpts[-1])  # resume from the first epoch's checkpoint ...
    (ckpts[0] / "random_states_0.pkl").unlink()  # ... which lost its RNG states
    with pytest.raises(ConfigError, match=r"random_states_0.pkl .*missing.*--resume-inexact"):
        train(r)  # before: resumed silently, weights off by up to 0.024
    train(replace(r, resume_inexact=True))
    assert "not bit-exact" in caplog.text


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(lr=0.5), "--lr 0.01 (checkpoint) vs 0.5 (now)"),
        (dict(width=1 / 8), "--width 0.0625 (checkpoint) vs 0.125 (now)"),
        (dict(schedule="cosine"), "--schedule 'plateau' (checkpoint) vs 'cosine' (now)"),
        (dict(batch_size=3), "--batch-size 6 (checkpoint) vs 3 (now)"),
    ],
)
def test_resuming_with_changed_run_options_is_refused_naming_both_values(runs, tmp_path, change, words):
    cfg, _ = runs
    r = copy_run(cfg, tmp_path)
    shutil.rmtree(newest(r))
    with pytest.raises(ConfigError, match="trained with other options") as e:
        train(replace(r, **change))  # before: lr ignored silently; width a state-dict traceback
    assert words in str(e.value)


@pytest.mark.slow
def test_epochs_may_change_on_resume_to_extend_a_run(runs, tmp_path):
    cfg, _ = runs
    r = copy_run(cfg, tmp_path)
    train(replace(r, epochs=3))
    assert (r.run_dir() / "checkpoints" / "step_00000003").is_dir()
    help_text = subprocess.run(
        [sys.executable, str(RECIPE), "--help"], cwd=REPO, env=_env(), capture_output=True, text=True
    ).stdout
    assert "--epochs" in help_text and "may change on --resume" in help_text


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(batch_size=100), "6 training images are fewer than one batch (--batch-size 100"),
        (dict(epochs=0), "--epochs 0: must be at least 1"),
        (dict(lr=-1.0), "--lr -1.0: must be above 0"),
        (dict(width=0), "--width 0: must be above 0"),
    ],
)
def test_training_that_cannot_train_is_refused(tmp_path, kw, words):
    data = write_imagefolder(tmp_path / "d", n_train=2)
    cfg = TrainConfig(name="x", data=str(data), output_dir=str(tmp_path / "runs"), **{**RUN, **kw})
    with pytest.raises(ConfigError) as e:
        train(cfg)  # before: 0 steps, loss 0.0, an untrained final.safetensors and success
    assert words in str(e.value)
    assert not (tmp_path / "runs" / "x" / "final.safetensors").exists()


def test_one_class_is_refused(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=2)
    for split in ("train", "val"):
        for c in ("class1", "class2"):
            shutil.rmtree(data / split / c)
    cfg = TrainConfig(name="x", data=str(data), output_dir=str(tmp_path / "runs"), **{**RUN, "batch_size": 2})
    with pytest.raises(ConfigError, match="one class .*'class0'.*at least 2"):
        train(cfg)


@pytest.mark.slow
def test_the_recipe_refuses_bad_numbers_at_parse_time_in_one_line(tmp_path):
    for argv, words in (
        (["--lr", "-1"], "argument --lr: -1.0: must be above 0"),
        (["--batch-size", "0"], "argument --batch-size: 0: must be at least 1"),
        (["--epochs", "0"], "argument --epochs: 0: must be at least 1"),
        (["--width", "0"], "argument --width: 0.0: must be above 0"),
    ):
        r = subprocess.run(
            [sys.executable, str(RECIPE), "--data", str(tmp_path), *argv],
            cwd=REPO, env=_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
