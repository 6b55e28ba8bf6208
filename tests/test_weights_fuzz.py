"""A seeded mutation test of the weights readers: truncated files, flipped bytes and random
bytes in .pth, .safetensors and .caffemodel files. Loading each either works (a mutation of a
float's bytes is still weights) or raises WeightsError naming the file: never another error."""

import numpy as np
import pytest
import torch
from _caffe_writer import write_caffemodel
from test_caffe import tiny_layers

import vggfeat
from vggfeat.errors import WeightsError

N = 120  # mutations per format: 360 files in all


def tiny():
    torch.manual_seed(0)
    return vggfeat.vgg("A", width=1 / 16, fc_dim=16, num_classes=3, crop=32)


def originals(tmp_path):
    m = tiny()
    pth = tmp_path / "w.pth"
    torch.save(m.state_dict(), pth)
    st = vggfeat.save_weights(m, tmp_path / "w.safetensors")
    caffe = write_caffemodel(tmp_path / "w.caffemodel", tiny_layers("A"))
    return {".pth": pth.read_bytes(), ".safetensors": st.read_bytes(), ".caffemodel": caffe.read_bytes()}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    kind = rng.integers(4)
    b = bytearray(data)
    if kind == 0:  # truncation
        return bytes(b[: rng.integers(0, len(b))])
    if kind == 1:  # a few flipped bytes, anywhere
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == 2:  # flips in the header / first kilobyte, where the structure is
        for i in rng.integers(0, min(len(b), 1024), rng.integers(1, 4)):
            b[i] = int(rng.integers(256))
        return bytes(b)
    n = int(rng.integers(0, 4096))  # random bytes, sometimes behind the right magic
    junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return data[: int(rng.integers(0, 16))] + junk


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".caffemodel"])
def test_every_mutated_weights_file_loads_or_raises_weights_error(tmp_path, suffix):
    data = originals(tmp_path)[suffix]
    rng = np.random.default_rng(1409)
    outcomes = {"loaded": 0, "WeightsError": 0}
    for i in range(N):
        path = tmp_path / f"m{i}{suffix}"
        path.write_bytes(mutate(data, rng))
        try:
            vggfeat.vgg(None, weights=str(path))
            outcomes["loaded"] += 1
        except WeightsError as e:
            assert str(path.name) in str(e), e
            outcomes["WeightsError"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {i} of {suffix}: {type(e).__name__}: {e}")
        path.unlink()
    assert outcomes["WeightsError"] > N // 3, outcomes
