import os
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import vggfeat  # noqa: E402

TINY = dict(width=1 / 16, fc_dim=32, num_classes=10)


@pytest.fixture
def tiny():
    """A factory of tiny, deterministic networks (4-32 channels, fc 32)."""

    def make(config="D", seed=0, **kw):
        torch.manual_seed(seed)
        m = vggfeat.vgg(config, **{**TINY, **kw}).eval()
        return m

    return make


def random_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    # smooth content so that resizing matters but is not pure noise
    base = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    noise = rng.integers(-20, 21, (h, w, 3))
    arr = np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    return img if mode == "RGB" else img.convert(mode)


@pytest.fixture
def images():
    """Images of several sizes and aspect ratios (VOC-like and others)."""
    sizes = [(240, 320), (320, 240), (240, 320), (250, 250), (120, 90), (300, 200)]
    return [random_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]


REPO = Path(__file__).resolve().parents[1]


def vggfeat_command(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m vggfeat.cli ARGS`` in a subprocess, on this checkout, one thread, offline."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vggfeat.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def script(name: str):
    """A benchmark script imported as a module (``benchmarks/`` is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """``args`` (a script and its arguments, or ``-m module ...``) as ``n`` gloo ranks on CPU, as
    ``accelerate launch`` would start them (docs/architecture.md: ``--cpu --num_processes`` runs one)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *map(str, args),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty, offline torch hub cache: torchvision weights are missing until a test writes them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def fake_vgg16(torch_home):
    """A stand-in for torchvision's VGG-16 ImageNet file in the hub cache: torchvision's key names
    and shapes, every tensor a constant (stride 0, so the file is a few bytes per tensor)."""
    import torchvision
    from torchvision.models import VGG16_Weights

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    path = torch_home / os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.full((1,), i / 100).expand(s) for i, (k, s) in enumerate(shapes.items())}, path)
    return path


def naive_voc07_ap(scores, labels):
    """11-point AP written from the devkit's description, independently of vggfeat.svm."""
    keep = labels != 0
    s, y = scores[keep], labels[keep] > 0
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(y[order])
    prec, rec = tp / np.arange(1, len(tp) + 1), tp / max(y.sum(), 1)
    return np.mean([max([p for p, r in zip(prec, rec) if r >= t] or [0]) for t in np.linspace(0, 1, 11)])
