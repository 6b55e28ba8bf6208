"""The precision policy: "auto" on each kind of hardware (the capability injected), the named
precisions through extract / Extractor / VGGFeatures / posteriors / run_protocols and the
commands, and the resolved name in every output (store key, .npy sidecar, parquet metadata,
results rows, `vggfeat info`)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import vggfeat_command

import vggfeat
from vggfeat import evaluate
from vggfeat.data.decode import resize_smallest
from vggfeat.features import precision as policy
from vggfeat.features.precision import Capability, resolve
from vggfeat.options import PRECISIONS

AMX_CPU = Capability(
    "cpu", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}), name="Xeon"
)
ZEN4_CPU = Capability("cpu", frozenset({"avx2", "avx512f", "avx512_bf16"}), name="EPYC 9004")
AVX2_CPU = Capability("cpu", frozenset({"avx2", "fma"}), name="EPYC 7002")
H100 = Capability("cuda", cuda_capability=(9, 0), name="H100")
V100 = Capability("cuda", cuda_capability=(7, 0), name="V100")
S = (224,)


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the features of", UserWarning)
        yield


def net(seed=0):
    torch.manual_seed(seed)
    return vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10).eval()


def pictures(n=3, size=(230, 250)):
    return [np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8) for i in range(n)]


# -- the policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cap, want",
    [(AMX_CPU, "bf16"), (ZEN4_CPU, "fp32"), (AVX2_CPU, "fp32"), (H100, "bf16"), (V100, "fp32")],
    ids=["amx-cpu", "avx512bf16-no-amx", "avx2-cpu", "cuda-sm90", "cuda-sm70"],
)
def test_auto_resolves_by_what_the_device_computes_natively(cap, want):
    r = resolve("auto", cap.kind, cap)
    assert (r.name, r.asked) == (want, "auto")
    assert cap.name in r.reason  # the reason names the device
    # a name asked for is what runs, whatever the hardware (fp16 on CUDA only)
    for name in ("fp32", "bf16") + (("fp16",) if cap.kind == "cuda" else ()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert resolve(name, cap.kind, cap).name == name


def test_bad_names_and_fp16_on_cpu_are_refused_in_one_line_and_emulated_bf16_warns():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        resolve("half", "cpu", AVX2_CPU)
    with pytest.raises(ValueError, match="'fp16' is for CUDA GPUs; on cpu use 'bf16' or 'fp32'"):
        resolve("fp16", "cpu", AMX_CPU)
    with pytest.warns(RuntimeWarning, match="emulated there and slower than fp32"):
        resolve("bf16", "cpu", AVX2_CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16 asked for by name: no warning
        resolve("bf16", "cpu", AMX_CPU)
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")


def test_probe_reads_this_machines_flags_as_proc_cpuinfo_lists_them():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    cap = policy.probe("cpu")
    assert cap.kind == "cpu"
    if flags:
        assert set(cap.cpu_flags) == flags
    want = "bf16" if "amx_bf16" in flags else "fp32"
    assert resolve("auto", "cpu").name == want


# -- through the library ---------------------------------------------------------------------------


def test_extract_bf16_is_autocast_of_the_same_net_and_fp32_is_the_default_here():
    m, imgs = net(), pictures()
    with pytest.warns(RuntimeWarning, match="emulated") if not _native() else warnings.catch_warnings():
        b = vggfeat.extract(imgs, model=m, scales=S, flip=False, progress=False, precision="bf16")
    a = vggfeat.extract(imgs, model=m, scales=S, flip=False, progress=False, precision="fp32")
    auto = vggfeat.extract(imgs, model=m, scales=S, flip=False, progress=False)
    if not _native():
        np.testing.assert_array_equal(auto, a)  # auto is fp32 on a CPU without AMX
    # independent reference: the net's own dense forward under torch.autocast, by hand
    dense = m.dense()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = []
        for x in imgs:
            t = resize_smallest(torch.from_numpy(x).permute(2, 0, 1), S[0]).float() / 255
            x = m.preprocess.apply(t[None]).contiguous(memory_format=torch.channels_last)
            [f] = dense.forward_layers(x, ("fc7",))
            ref.append(torch.nn.functional.normalize(f.float().mean((-2, -1))[0], dim=0))
    ref = torch.stack(ref).numpy()
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, ref, atol=2e-3)  # bf16 rounding of one op order vs another
    assert np.abs(b - a).max() > 1e-5  # it is really computed in bf16
    assert (a * b).sum(1).min() > 0.999


def _native() -> bool:
    return resolve("auto", "cpu").name == "bf16"


def test_auto_on_an_amx_cpu_runs_bf16_and_its_rows_go_to_a_store_of_their_own(tmp_path, monkeypatch):
    m, imgs = net(), pictures(2)
    cache = tmp_path / "cache"
    fp32 = vggfeat.Extractor(m, scales=S, cache=cache, progress=False, precision="fp32")
    a = fp32(imgs)
    monkeypatch.setattr(policy, "probe", lambda device: AMX_CPU)  # the hardware check, injected
    amx = vggfeat.Extractor(m, scales=S, cache=cache, progress=False)  # auto
    assert (amx.precision.name, amx.precision.asked) == ("bf16", "auto")
    assert (fp32.protocol()["precision"], amx.protocol()["precision"]) == ("float32", "bf16")
    b = amx(imgs)
    # computed afresh in bf16, not served from the fp32 rows: two stores under fc7/
    assert not np.array_equal(a, b) and len(list((cache / "fc7").iterdir())) == 2
    direct = vggfeat.extract(imgs, model=m, scales=S, progress=False, precision="bf16")
    np.testing.assert_array_equal(b, direct)
    np.testing.assert_array_equal(vggfeat.Extractor(m, scales=S, cache=cache, progress=False)(imgs), b)
    monkeypatch.setattr(policy, "probe", lambda device: AVX2_CPU)
    c = vggfeat.Extractor(m, scales=S, cache=cache, progress=False)
    assert c.precision.name == "fp32"
    np.testing.assert_array_equal(c(imgs), a)  # served from the fp32 store


def test_auto_on_cuda_resolves_bf16_on_tensor_cores_without_running_cuda(monkeypatch):
    monkeypatch.setattr(policy, "probe", lambda device: H100)
    r = resolve("auto", "cuda:0")
    assert r.name == "bf16" and "compute capability 9.0" in r.reason
    monkeypatch.setattr(policy, "probe", lambda device: V100)
    assert resolve("auto", "cuda").name == "fp32"
    assert policy.describe("cuda")["cuda"]["auto"] == "fp32"


def test_sklearn_posteriors_and_run_protocols_take_and_report_the_precision():
    from vggfeat.features.sklearn import VGGFeatures

    m, imgs = net(), pictures(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = VGGFeatures(model=m, scales=S, progress=False, precision="bf16").fit(imgs)
        assert t.extractor_.precision.name == "bf16" and t.get_params()["precision"] == "bf16"
        Pb = evaluate.posteriors(m, imgs, scales=S, progress=False, precision="bf16")
        rows, _ = evaluate.run_protocols(
            {"A": m}, imgs, [0, 1, 2], protocols=("single",), scales={"A": ((224, 240, 256), 224)},
            progress=False, precision="bf16",
        )  # fmt: skip
    Pf = evaluate.posteriors(m, imgs, scales=S, progress=False, precision="fp32")
    assert np.abs(Pb - Pf).max() > 0 and np.abs(Pb - Pf).max() < 0.02
    assert rows[0]["precision"] == "bf16"
    rows, _ = evaluate.run_protocols(
        {"A": m}, imgs, [0, 1, 2], protocols=("single",), scales={"A": ((224, 240, 256), 224)}, progress=False
    )
    assert rows[0]["precision"] == resolve("auto", "cpu").name


# -- the commands ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vggfeat_extract_precision_is_recorded_in_the_sidecar_and_parquet_metadata(tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, x in enumerate(pictures(2)):
        Image.fromarray(x).save(folder / f"{i}.png")
    w = vggfeat.save_weights(net(), tmp_path / "a.safetensors")
    common = [folder, "--weights", w, "--scales", "224", "--quiet"]
    r = vggfeat_command("extract", *common, "--precision", "bf16", "--out", tmp_path / "f.npy")
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "f.npy.json").read_text())
    assert (side["precision"], side["precision_asked"]) == ("bf16", "bf16")
    r = vggfeat_command("extract", *common, "--out", tmp_path / "f.parquet")
    assert r.returncode == 0, r.stderr
    meta = json.loads(pq.read_schema(tmp_path / "f.parquet").metadata[b"vggfeat"])
    assert (meta["precision"], meta["precision_asked"]) == (resolve("auto", "cpu").name, "auto")
    assert meta["precision_reason"] == resolve("auto", "cpu").reason
    r = vggfeat_command("extract", *common, "--precision", "fp16", "--out", tmp_path / "g.npy")
    assert r.returncode == 2 and "'fp16' is for CUDA GPUs" in r.stderr and "Traceback" not in r.stderr
    bf, fp = (
        np.load(tmp_path / "f.npy"),
        np.asarray(pq.read_table(tmp_path / "f.parquet")["features"].to_pylist()),
    )
    assert (bf * fp).sum(1).min() > 0.999 and not np.array_equal(bf, fp)


@pytest.mark.slow
def test_vggfeat_info_says_what_auto_resolves_to_here_and_why():
    r = vggfeat_command("info")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("precision auto on cpu:"))
    want = resolve("auto", "cpu")
    assert line == f"precision auto on cpu: {want.name} ({want.reason})"


@pytest.mark.slow
def test_vggfeat_evaluate_takes_precision_and_says_what_it_ran_in(tmp_path):
    from PIL import Image

    for c in range(2):
        (tmp_path / "val" / f"c{c}").mkdir(parents=True)
        for i, x in enumerate(pictures(2)):
            Image.fromarray(x).save(tmp_path / "val" / f"c{c}" / f"{i}.png")
    torch.manual_seed(0)
    w = vggfeat.save_weights(
        vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=2), tmp_path / "a.safetensors"
    )
    args = ["evaluate", tmp_path / "val", "--weights", w, "--scales", "224"]
    r = vggfeat_command(*args, "--precision", "bf16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("(4 images) in bf16")
    r = vggfeat_command(*args, "--precision", "half")
    assert r.returncode == 2 and "--precision: invalid choice: 'half'" in r.stderr
