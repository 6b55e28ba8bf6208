"""What a Hugging Face, scikit-learn or torchvision user does first, in a notebook: each either
works or fails with one sentence that names the fix. Tiny random nets (crop 32) on small images;
the random-weights warning is the subject of some tests and silenced in the others."""

import json
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from test_hf import image_ds, tiny_net

import vggfeat
from vggfeat.cli.extract import protocol_cost
from vggfeat.errors import RandomWeightsWarning
from vggfeat.features.dense import DenseEngine
from vggfeat.features.hf import add_features
from vggfeat.sklearn import VGGFeatures

KW = dict(num_workers=0, progress=False)
quiet = pytest.mark.filterwarnings("ignore::vggfeat.errors.RandomWeightsWarning")


def pixels(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32 + i % 3, 36 + i % 5, 3), dtype=np.uint8) for i in range(n)]


class Pairs(torch.utils.data.Dataset):
    """A torchvision-style dataset: (transformed image, label) pairs, as ImageFolder gives."""

    def __init__(self, arrays, transform):
        self.arrays, self.transform = arrays, transform

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.arrays[i])), i % 2


# ------------------------------------------------------------------------------ Hugging Face
@quiet
def test_map_without_batched_says_in_one_line_to_pass_batched_true():
    ds = image_ds(pixels(2), label=[0, 1])
    with pytest.raises(TypeError, match=r"batched=True") as e:
        ds.map(vggfeat.Extractor(tiny_net(), scales=(32,), **KW))
    assert "\n" not in str(e.value) and "len()" not in str(e.value)


@quiet
def test_add_features_and_extractor_map_name_the_column_alike():
    arrays, net = pixels(3), tiny_net()
    ext = vggfeat.Extractor(net, scales=(32,), **KW)
    mapped = image_ds(arrays).map(ext, batched=True)
    added = add_features(image_ds(arrays), model=net, scales=(32,), **KW)
    assert mapped.column_names == added.column_names == ["image", "features"]
    np.testing.assert_allclose(np.array(added["features"]), np.array(mapped["features"]), atol=1e-6)


@quiet
def test_add_features_twice_replaces_the_column_with_a_warning():
    arrays, net = pixels(3), tiny_net()
    once = add_features(image_ds(arrays), model=net, scales=(32,), **KW)
    with pytest.warns(UserWarning, match=r"replacing the column\(s\) \['features'\]") as seen:
        twice = add_features(once, model=net, scales=(48,), **KW)
    assert seen[0].filename == __file__  # the warning points at the caller's line
    assert twice.column_names == ["image", "features"]
    want = vggfeat.extract(arrays, model=net, scales=(48,), **KW)
    np.testing.assert_allclose(np.array(twice["features"]), want, atol=1e-6)


# ------------------------------------------------------------------------------- torchvision
@quiet
def test_an_already_normalised_tensor_is_recognised_and_told_to_drop_normalize():
    import torchvision.transforms as T

    tf = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    data = Pairs(pixels(2), tf)
    with pytest.raises(ValueError, match=r"already normalised .* drop Normalize") as e:
        vggfeat.extract(data, model=tiny_net(), scales=(32,), **KW)
    assert "weights' own preprocessing" in str(e.value) and "divide 0-255" not in str(e.value)
    with pytest.raises(ValueError, match="divide 0-255 values by 255"):  # 0-255 floats: as before
        vggfeat.extract([np.full((32, 32, 3), 200.0, np.float32)], model=tiny_net(), scales=(32,), **KW)


@quiet
@pytest.mark.parametrize("pairs", [True, False])
def test_a_dataloader_is_read_in_its_order(pairs):
    import torchvision.transforms as T

    arrays, net = pixels(5), tiny_net()
    data = Pairs(arrays, T.ToTensor()) if pairs else [T.ToTensor()(Image.fromarray(a)) for a in arrays]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=list)
    got = vggfeat.extract(loader, model=net, scales=(32,), **KW)
    np.testing.assert_allclose(got, vggfeat.extract(arrays, model=net, scales=(32,), **KW), atol=1e-6)


@quiet
def test_a_shuffling_dataloader_is_refused_with_the_idiom_that_works():
    loader = torch.utils.data.DataLoader(pixels(3), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match=r"extract\(loader.dataset\)"):
        vggfeat.extract(loader, model=tiny_net(), scales=(32,), **KW)


# ---------------------------------------------------------------------------------- protocol
@quiet
def test_single_protocol_is_one_scale_without_flip_beside_the_papers_default():
    arrays, net = pixels(3), tiny_net()
    single = vggfeat.Extractor(net, protocol="single", **KW)
    paper = vggfeat.Extractor(net, **KW)
    assert (single.scales, single.flip) == ((55,), False)  # Q = 384 x 32/224
    assert (paper.scales, paper.flip) == ((37, 55, 73), True)  # 256, 384, 512 x 32/224
    np.testing.assert_allclose(
        vggfeat.extract(arrays, model=net, protocol="single", **KW),
        vggfeat.extract(arrays, model=net, scales=55, flip=False, **KW),
    )
    with pytest.raises(ValueError, match="protocol must be one of"):
        vggfeat.Extractor(net, protocol="fast", **KW)


def test_extracts_docstring_states_the_costs_the_code_computes():
    doc = " ".join(vggfeat.extract.__doc__.split())
    paper, wide, single = protocol_cost(), protocol_cost(aspect=4 / 3), protocol_cost((384,), flip=False)
    assert f"cost of {paper:.0f} forward passes of a 224 x 224 crop for a square image, {wide:.0f}" in doc
    assert f"{single:.1f} and {protocol_cost((384,), flip=False, aspect=4 / 3):.1f} crops" in doc
    assert f"about {paper / single:.1f}x cheaper" in doc
    assert "protocol" in VGGFeatures().get_params()


@quiet
def test_scales_may_be_one_int():
    arrays, net = pixels(2), tiny_net()
    np.testing.assert_array_equal(
        vggfeat.extract(arrays, model=net, scales=40, **KW),
        vggfeat.extract(arrays, model=net, scales=(40,), **KW),
    )
    with pytest.raises(ValueError, match="smallest side Q"):
        vggfeat.extract(arrays, model=net, scales="256", **KW)


@quiet
def test_a_too_small_scale_names_the_users_options_not_internals():
    with pytest.raises(ValueError, match=r"at least 32 pixels for layer 'fc7'") as e:
        vggfeat.extract(pixels(1), model=tiny_net(), scales=(16,), **KW)
    assert "views" not in str(e.value) and "scales" in str(e.value)


@pytest.mark.slow
def test_batch_size_help_says_what_the_code_does():
    done = subprocess.run(
        [sys.executable, "-m", "vggfeat.cli", "extract", "--help"],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )  # fmt: skip
    help_text = " ".join(done.stdout.split())
    assert "sized to fit" not in help_text
    net = tiny_net()
    full = DenseEngine(net, scales=(32,), layer="fc7", device="cpu").batch_size
    grid = DenseEngine(net, scales=(32,), layer="fc8", views="grid", device="cpu").batch_size
    assert f"default: {full} on CPU, 32 on CUDA; {grid} and 4 for 25-crop multi-crop" in help_text


# ---------------------------------------------------------------------------------- warnings
def random_warnings(caught):
    return [w for w in caught if issubclass(w.category, RandomWeightsWarning)]


def test_random_weights_warn_once_in_a_grid_search_at_the_users_line(caplog):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X, y = pixels(8), [0, 1] * 4
    pipe = make_pipeline(VGGFeatures(model=tiny_net(), scales=32, **KW), LogisticRegression())
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=2)
    with caplog.at_level(logging.INFO, logger="vggfeat"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter: once per line of the user's code
        grid.fit(X, y)  # 3 candidates x 2 folds + the refit: 7 extractors
    seen = random_warnings(caught)
    assert len(seen) == 1 and seen[0].filename == __file__
    assert not [r for r in caplog.records if "randomly initialised" in r.getMessage()]  # no logging copy


def test_an_extractor_or_estimator_warns_once_not_per_call_or_fit():
    X = pixels(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # even when every warning is shown
        ext = vggfeat.Extractor(tiny_net(), scales=32, **KW)
        ext(X), ext(X)
        est = VGGFeatures(model=tiny_net(), scales=32, **KW)
        est.fit(X).transform(X), est.fit(X).transform(X), est.fit_transform(X)
    assert len(random_warnings(caught)) == 2  # one per Extractor, one per estimator


@pytest.mark.slow
def test_the_cli_says_random_weights_once(tmp_path):
    for i, a in enumerate(pixels(2)):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    cmd = [sys.executable, "-m", "vggfeat.cli", "extract", str(tmp_path), "--model", "A", "--weights", "none"]
    cmd += ["--width", "0.0625", "--fc-dim", "32", "--layer", "pool5", "--scales", "32", "--quiet"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "f.npy")], capture_output=True, text=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.lower().count("random") == 2, done.stderr  # "RANDOM WEIGHTS ... randomly initialised"
    assert done.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------ plots
def test_protocols_png_title_says_what_was_evaluated_not_ilsvrc(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from vggfeat.evaluation import plots

    titles = []
    real = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda ax, t, *a, **k: titles.append(t) or real(ax, t, *a, **k))
    rows = [dict(model="D", protocol="single", top1=60.0, top5=20.0)]
    plots.protocol_errors(tmp_path / "protocols.png", rows, classes=2)
    plots.protocol_errors(tmp_path / "protocols.png", rows, classes=2, images=12)
    assert titles == ["error per protocol (2 classes)", "error per protocol (12 images of 2 classes)"]


def test_curves_png_numbers_epochs_as_the_log_does(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from vggfeat.train.report import plot_metrics

    rows = [dict(epoch=e, train_loss=1.0 / (e + 1), lr=0.01) for e in range(3)]
    rows[2]["resumed_at_step"] = 8
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    xs, vlines = [], []
    real_plot, real_vline = Axes.plot, Axes.axvline
    monkeypatch.setattr(Axes, "plot", lambda ax, x, *a, **k: xs.append(list(x)) or real_plot(ax, x, *a, **k))
    monkeypatch.setattr(
        Axes, "axvline", lambda ax, x, *a, **k: vlines.append(x) or real_vline(ax, x, *a, **k)
    )
    plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert xs and all(x == [0, 1, 2] for x in xs)  # the log's "epoch 0:" is the plot's epoch 0
    assert set(vlines) == {2}


def drawn_figures(monkeypatch):
    from vggfeat.evaluation import plots

    figs, real = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or real(fig, path))
    return figs


def covered_bars(fig) -> list:
    """The bars (of non-zero height) the legend of ``fig``'s axes overlaps, once drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.container import BarContainer

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent(renderer)
    bars = [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches if p.get_height() > 0]
    assert bars
    return [p for p in bars if box.overlaps(p.get_window_extent(renderer))]


def test_legends_cover_no_bars_in_ap_per_class_and_protocols(tmp_path, monkeypatch):
    from vggfeat.evaluation import plots

    figs = drawn_figures(monkeypatch)
    classes = [f"class{i}" for i in range(20)]
    values = {c: 0.9 - 0.02 * i for i, c in enumerate(classes)}  # high bars, to the right edge too
    refs = {"this run": 0.8, "paper": 0.89, "chance mAP": 0.1}
    plots.bar_chart(
        tmp_path / "ap_per_class.png", values, references=refs, markers=dict.fromkeys(classes, 0.1)
    )
    rows = [dict(model=m, protocol=p, top1=90.0, top5=80.0) for m in "DE" for p in ("single", "multi")]
    plots.protocol_errors(tmp_path / "protocols.png", rows, classes=2)
    assert [covered_bars(f) for f in figs] == [[], []]
