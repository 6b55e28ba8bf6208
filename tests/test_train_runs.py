"""Run folders and options around a training run: a failed --data check leaves no folder,
--overwrite starts a used folder afresh, --name's help shows the preset's name, and --sync-bn
(synchronised batch norm) where torch supports it, refused in one line where it does not."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from test_train import RECIPE, REPO, TINY, _env, _recipe, write_imagefolder

import vggfeat
from vggfeat.errors import ConfigError
from vggfeat.train import TrainConfig, build_model, train


def test_a_run_that_fails_its_data_check_leaves_no_run_folder(tmp_path):
    out = tmp_path / "runs"
    argv = ["--data", str(tmp_path / "nowhere"), "--output-dir", str(out), "--name", "x", "--no-progress"]
    r = subprocess.run(
        [sys.executable, str(RECIPE), *argv], cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "x").exists()


def test_overwrite_starts_a_used_run_folder_afresh(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=2)
    cfg = TrainConfig(name="r", data=str(data), output_dir=str(tmp_path / "runs"), **TINY)
    cfg = replace(cfg, batch_size=2, epochs=2)
    train(cfg)
    with pytest.raises(ConfigError, match="--overwrite to start it afresh"):
        train(replace(cfg, epochs=1))
    train(replace(cfg, epochs=1, overwrite=True))
    run = tmp_path / "runs" / "r"
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0]  # the earlier run's two epochs are gone
    assert json.loads((run / "config.json").read_text())["epochs"] == 1


def test_name_help_shows_the_presets_name():
    text = " ".join(_recipe().get_args_parser().format_help().split())
    assert "--name NAME outputs go to <output_dir>/<name>/ (default: the --preset's name, else run)" in text


def test_sync_bn_converts_batch_norm_and_saves_plain_weights(tmp_path):
    cfg = TrainConfig(data="x", **{**TINY, "batch_norm": True, "sync_bn": True})
    m = build_model(cfg, 3, (0.5, 0.5, 0.5))
    assert any(isinstance(x, torch.nn.SyncBatchNorm) for x in m.modules())
    assert not any(type(x) is torch.nn.BatchNorm2d for x in m.modules())
    plain = build_model(replace(cfg, sync_bn=False), 3, (0.5, 0.5, 0.5))
    assert m.state_dict().keys() == plain.state_dict().keys()
    w = vggfeat.save_weights(m, tmp_path / "s.safetensors")
    back = vggfeat.vgg(weights=str(w))
    assert any(type(x) is torch.nn.BatchNorm2d for x in back.modules())


@pytest.mark.parametrize(
    "bn, words", [(True, "runs on cuda/xpu/hpu devices, not on cpu"), (False, "add --batch-norm")]
)
def test_sync_bn_is_refused_in_one_line_where_it_cannot_work(tmp_path, bn, words):
    data = write_imagefolder(tmp_path / "d", n_train=2)
    cfg = TrainConfig(name="r", data=str(data), output_dir=str(tmp_path / "runs"), **TINY)
    with pytest.raises(ConfigError, match=words):
        train(replace(cfg, batch_size=2, epochs=1, batch_norm=bn, sync_bn=True))
    assert not (tmp_path / "runs" / "r").exists()
