"""benchmarks/extract_throughput.py's rows compute what vggfeat.extract computes: the naive loop
and timm's dense head (the vggfeat net's weights copied into timm's VGG) on the same images, and
the option of the precisions it runs."""

import numpy as np
import pytest
import torch
from conftest import script

import vggfeat


@pytest.mark.slow
def test_timm_dense_head_and_naive_loop_give_extracts_descriptors(tmp_path):
    mod = script("extract_throughput")
    paths = mod.make_images(tmp_path, 1)
    torch.manual_seed(0)
    m = vggfeat.vgg("A").eval()  # timm builds only the paper's widths
    X = vggfeat.extract(paths, model=m, scales=(224,), progress=False, weights=None, precision="fp32")
    naive = mod.naive(m, paths, (224,), "cpu")
    net = mod.timm_net(m)
    timm = mod.naive(m, paths, (224,), "cpu", lambda v: net.pre_logits(net.forward_features(v)))
    # PIL's resize (naive, timm) against torchvision's uint8 resize (extract): close, not equal
    assert (X * naive).sum(1).min() > 0.999 and np.abs(timm - naive).max() < 1e-4
    args = mod.from_args(
        mod.Config, mod.get_args_parser().parse_args(["--precision", "bf16", "--width", "0.5"])
    )
    assert [r[0] for r in mod.rows_to_run(args)] == [
        "vggfeat fp32", "vggfeat bf16", "vggfeat fp32, 2 workers", "naive loop"
    ]  # fmt: skip
