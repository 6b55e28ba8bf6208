import os

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
