"""Sec. 3.1 augmentation: compared against vggfeat.data.decode.rescale, hand slicing and the PCA formula."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vggfeat.data.decode import rescale, to_tensor
from vggfeat.data.imagefolder import LabelledImages
from vggfeat.train.training_set import SkippingCollate, TrainingSet
from vggfeat.train.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    PCALighting,
    ScaleJitter,
    eval_transform,
    sample_rng,
    sample_seed,
    train_transform,
)


def _image(h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _find_crop(full: torch.Tensor, crop: torch.Tensor):
    """All (top, left) where ``crop`` equals a window of ``full`` (naive search)."""
    c = crop.shape[-1]
    return [
        (t, left)
        for t in range(full.shape[1] - c + 1)
        for left in range(full.shape[2] - c + 1)
        if torch.equal(full[:, t : t + c, left : left + c], crop)
    ]


@pytest.mark.parametrize("scale", [36, 40, 52])
def test_fixed_scale_crop_is_a_window_of_the_rescaled_image(scale):
    img = _image()
    ref = rescale(to_tensor(img), scale)
    assert min(ref.shape[1:]) == scale
    tf = train_transform(crop_size=32, scale=scale, flip=False, lighting=0)
    for i in range(5):
        with sample_rng(0, 0, i):
            out = tf(img)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert len(_find_crop(ref, out)) >= 1


def test_scale_jitter_draws_every_integer_in_range_and_matches_rescale():
    img = _image(30, 50)
    jitter = ScaleJitter(32, 36)
    seen = set()
    for i in range(200):
        with sample_rng(1, 0, i):
            out = jitter(to_tensor(img))
        s = min(out.shape[1:])
        seen.add(s)
        if i < 10:
            assert torch.equal(out.float() / 255, rescale(to_tensor(img), s))
    assert seen == {32, 33, 34, 35, 36}
    with pytest.raises(ValueError):
        ScaleJitter(40, 30)


def test_flip_is_mirror_of_unflipped_crop_about_half_the_time():
    img = _image()
    plain = rescale(to_tensor(img), 40)  # 40 x 48: crops differ only in their left edge
    flipped = 0
    for i in range(200):
        with sample_rng(2, 0, i):
            out = train_transform(crop_size=40, scale=40, flip=True, lighting=0)(img)
        windows = _find_crop(plain, out)
        mirrored = _find_crop(plain.flip(-1), out)
        assert windows or mirrored
        flipped += bool(mirrored) and not windows
    assert 70 < flipped < 130


def test_pca_lighting_shift_is_the_alexnet_formula():
    x = torch.rand(3, 5, 6)
    with sample_rng(3, 0, 0):
        out = PCALighting(0.1)(x)
    with sample_rng(3, 0, 0):
        alpha = torch.randn(3).numpy() * 0.1
    expected = np.array(IMAGENET_EIGVEC) @ (alpha * np.array(IMAGENET_EIGVAL))
    shift = (out - x).numpy()
    np.testing.assert_allclose(shift, np.broadcast_to(expected[:, None, None], shift.shape), atol=1e-6)


def test_pca_lighting_covariance_over_draws():
    # E[shift shift^T] = V diag((std * eigval)^2) V^T
    V, lam = np.array(IMAGENET_EIGVEC), np.array(IMAGENET_EIGVAL)
    tf = PCALighting(0.1)
    torch.manual_seed(0)
    shifts = np.stack([(tf(torch.zeros(3, 1, 1)))[:, 0, 0].numpy() for _ in range(20000)])
    expected = V @ np.diag((0.1 * lam) ** 2) @ V.T
    np.testing.assert_allclose(np.cov(shifts.T), expected, atol=3e-5)
    with pytest.raises(TypeError):
        tf(torch.zeros(3, 2, 2, dtype=torch.uint8))


def test_eval_transform_is_rescale_then_centre_crop():
    img = _image(40, 48)
    out = eval_transform(crop_size=32, scale=36)(img)
    ref = rescale(to_tensor(img), 36)  # 36 x 43
    top, left = round((36 - 32) / 2), round((43 - 32) / 2)
    assert torch.equal(out, ref[:, top : top + 32, left : left + 32])


def test_sample_rng_is_a_function_of_seed_epoch_index_and_restores_state():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with sample_rng(0, 1, 2):
        a = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    with sample_rng(0, 1, 2):
        assert torch.equal(torch.rand(4), a)
    draws = set()
    for key in [(0, 1, 2), (0, 1, 3), (0, 2, 2), (1, 1, 2)]:
        with sample_rng(*key):
            draws.add(float(torch.rand(())))
    assert len(draws) == 4
    assert len({sample_seed(0, e, i) for e in range(10) for i in range(100)}) == 1000


class _Toy(LabelledImages):
    classes = ["a"]

    def __len__(self):
        return 8

    def load(self, i):
        return _image(seed=i), 0


def _epoch_batches(loader, ds, epoch):
    ds.set_epoch(epoch)
    return [x for x, _, _, _ in loader]


def test_augmentation_identical_in_workers_and_main_process_and_changes_with_epoch():
    ds = TrainingSet(_Toy(), train_transform(crop_size=32, scale=(36, 44)), seed=5)
    collate = SkippingCollate((3, 32, 32))
    main = DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=0)
    workers = DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):
        a, b = _epoch_batches(main, ds, epoch), _epoch_batches(workers, ds, epoch)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(_epoch_batches(main, ds, 0)[0], _epoch_batches(main, ds, 1)[0])
