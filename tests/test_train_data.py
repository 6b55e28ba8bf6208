"""The trainer's data: ImageNet's val/ as distributed (Kaggle, devkit), clear errors for a wrong
--data, and the mean RGB computed over two gloo ranks = one process = numpy.

The trees are written by the tests in the real layouts, with a handful of 8x8 images."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import RECIPE, TINY, _free_port, _recipe, _run, write_imagefolder

from vggfeat.data.imagefolder import open_splits
from vggfeat.errors import DataError
from vggfeat.train import TrainConfig, train
from vggfeat.train.meanrgb import cache_paths, compute_mean_rgb

# The devkit's class IDs are not the sorted wnid order: ID 1 is n02119789, the first folder n01440764.
DEVKIT_ORDER = ["n02119789", "n02100735", "n01440764", "n01751748"]
CLASSES = sorted(DEVKIT_ORDER)
VAL = ["n01751748", "n02119789", "n01440764", "n01751748", "n02100735"]  # image k's true class


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, format="JPEG")


def _imagenet(root: Path) -> Path:
    """train/<wnid>/*.JPEG and a flat val/ILSVRC2012_val_0000000k.JPEG."""
    for c, wnid in enumerate(CLASSES):
        _jpeg(root / "train" / wnid / f"{wnid}_1.JPEG", c)
    for k in range(1, len(VAL) + 1):
        _jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", 100 + k)
    return root


def _expected() -> list[int]:
    return [CLASSES.index(w) for w in VAL]


def test_kaggle_layout_reads_loc_val_solution_three_levels_up(tmp_path):
    data = _imagenet(tmp_path / "ILSVRC" / "Data" / "CLS-LOC")
    rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 30 40 {w} 5 6 7 8" for k, w in enumerate(VAL, start=1)]
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n"
    )
    lines = [f"{w} name of {w}" for w in CLASSES]
    (tmp_path / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    train_images, val = open_splits(data)
    assert train_images.classes == val.classes == CLASSES
    assert [Path(val.name(i)).name for i in range(len(val))] == sorted(
        p.name for p in (data / "val").iterdir()
    )
    assert val.labels() == _expected()
    img, label = val.load(1)
    assert label == CLASSES.index("n02119789") and img.size == (8, 8)
    # and the trainer runs on it, dense validation included
    cfg = TrainConfig(
        name="k", data=str(data), output_dir=str(tmp_path / "runs"), **TINY, batch_size=2, epochs=1
    )
    train(replace(cfg, val_dense=True))
    row = json.loads((tmp_path / "runs/k/metrics.jsonl").read_text())
    assert row["skipped_val_images"] == 0 and 0 <= row["val_dense_top1_err"] <= 1


def _devkit(tmp_path: Path) -> tuple[Path, Path]:
    from scipy.io import savemat

    data = _imagenet(tmp_path / "imagenet")
    kit = data / "ILSVRC2012_devkit_t12" / "data"
    kit.mkdir(parents=True)
    truth = [DEVKIT_ORDER.index(w) + 1 for w in VAL]  # 1-based IDs
    (kit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in truth))
    # meta.mat: a struct array "synsets"; leaves have num_children 0, inner nodes come after
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(i + 1, w, f"words {w}", 0) for i, w in enumerate(DEVKIT_ORDER)] + [(5, "n00001740", "entity", 3)]
    synsets = np.array(rows, dtype=fields)
    savemat(str(kit / "meta.mat"), {"synsets": synsets})
    return data, kit


def test_devkit_layout_maps_ground_truth_ids_through_meta_mat(tmp_path):
    data, kit = _devkit(tmp_path)
    _, val = open_splits(data)
    assert val.labels() == _expected()
    # a wnid list in the devkit's order works too; a sorted list (Kaggle's LOC_synset_mapping.txt,
    # Caffe's synset_words.txt) is the class-folder order, and would silently mislabel: refused
    (tmp_path / "devkit_order.txt").write_text("\n".join(DEVKIT_ORDER) + "\n")
    _, val = open_splits(data, val_synsets=tmp_path / "devkit_order.txt")
    assert val.labels() == _expected()
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{w} name\n" for w in CLASSES))
    with pytest.raises(DataError, match="sorted order.*meta.mat"):
        open_splits(data, val_synsets=tmp_path / "LOC_synset_mapping.txt")
    (kit / "meta.mat").unlink()
    with pytest.raises(DataError, match="--val-synsets"):
        open_splits(data)


def test_flat_val_without_labels_says_how_to_lay_it_out(tmp_path):
    data = _imagenet(tmp_path / "imagenet")
    with pytest.raises(DataError) as e:
        open_splits(data)
    msg = str(e.value)
    assert "\n" not in msg and "5 images" in msg and "val/<class>/" in msg
    assert "--val-labels LOC_val_solution.csv" in msg and "--val-synsets meta.mat" in msg


@pytest.mark.parametrize("kind", ["missing", "empty", "no-train", "file"])
def test_wrong_data_gives_one_line_naming_the_path_and_the_layouts(tmp_path, kind):
    path = tmp_path / "data"
    if kind == "empty":
        path.mkdir()
    elif kind == "no-train":
        (path / "train").mkdir(parents=True)
        (path / "val").mkdir()
    elif kind == "file":
        path.write_text("x")
    recipe = _recipe()
    args = recipe.get_args_parser().parse_args(["--data", str(path), "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        recipe.main(args)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg and str(path) in msg, msg
    if kind != "no-train":
        assert "ImageFolder" in msg and "Hugging Face" in msg, msg


def _numpy_mean(root: Path) -> np.ndarray:
    """The mean over readable training images of each image's mean pixel, in [0, 1]."""
    means = []
    for f in sorted((root / "train").rglob("*.png")):
        try:
            means.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) / 255)
        except OSError:
            pass
    assert len(means) == 9
    return np.mean(means, axis=0)


def test_mean_rgb_equals_numpy_and_skips_unreadable(tmp_path):
    root = write_imagefolder(tmp_path / "d", n_train=3, corrupt=True)
    train_images, _ = open_splits(root)
    np.testing.assert_allclose(compute_mean_rgb(train_images), _numpy_mean(root), rtol=1e-9)
    # cached in the data folder when it is one, else in the run folder (a hub name)
    assert cache_paths(str(root), tmp_path / "run") == [
        root / "mean_rgb.json",
        tmp_path / "run" / "mean_rgb.json",
    ]
    assert cache_paths("owner/name", tmp_path / "run") == [tmp_path / "run" / "mean_rgb.json"]


@pytest.mark.slow
def test_mean_rgb_over_two_gloo_ranks_equals_one_process_and_numpy(tmp_path):
    data = write_imagefolder(tmp_path / "d", n_train=3)  # 9 images: the ranks get 5 and 4
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(RECIPE)]
    _run(torchrun + ["--data", str(data), "--compute-mean-rgb", "--num-workers", "0"])
    two = json.loads((data / "mean_rgb.json").read_text())
    assert (two["processes"], two["images"]) == (2, 9)
    one = compute_mean_rgb(open_splits(data)[0])
    np.testing.assert_allclose(two["mean_rgb"], one, rtol=1e-12)
    np.testing.assert_allclose(two["mean_rgb"], _numpy_mean(data), rtol=1e-9)


def test_mean_rgb_cache_of_a_smaller_sample_is_not_served_to_a_full_run(tmp_path):
    from accelerate import PartialState

    from vggfeat.train.meanrgb import shared_mean_rgb

    root = write_imagefolder(tmp_path / "d", n_train=3)
    images, _ = open_splits(root)
    kw = dict(data=str(root), run_dir=tmp_path / "run", state=PartialState(cpu=True))
    one = shared_mean_rgb(images, max_images=1, **kw)  # a quick run caches its one-image mean
    np.testing.assert_allclose(one, compute_mean_rgb(images, max_images=1), rtol=1e-12)
    full = shared_mean_rgb(images, **kw)
    np.testing.assert_allclose(full, _numpy_mean(root), rtol=1e-9)
    assert not np.allclose(one, full, atol=1e-3)
    record = json.loads((root / "mean_rgb.json").read_text())
    assert (record["images"], record["sampled"]) == (9, 9) and len(record["sample_digest"]) == 32
    again = shared_mean_rgb(images, **kw)  # the full mean now served from the cache
    assert again == tuple(record["mean_rgb"])
