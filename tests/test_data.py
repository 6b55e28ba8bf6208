"""Decoding: every input kind and image mode to the same RGB, with actionable errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vggfeat.data.decode import as_source, image_size, load_image, open_image, resized_size
from vggfeat.errors import ImageError


def test_modes_decode_to_rgb(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    # grayscale, palette and CMYK all come back as RGB of the same picture
    for mode in ("L", "P", "CMYK", "1"):
        p = tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.fromarray(rgb).convert(mode).save(p)
        img = open_image(p)
        assert img.mode == "RGB" and img.size == (6, 4)
    # RGBA: transparent pixels are composited on white, opaque ones kept
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[1, 1] = (0, 0, 0, 0)
    rgba[0, 1] = (0, 0, 0, 128)
    out = np.asarray(load_image(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (127, 127, 127)  # half-transparent black on white


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)  # mode I;16 (or I) PNG
    out = np.asarray(open_image(p))[0, :, 0]
    assert list(out) == [0, 128, 255]
    out = np.asarray(load_image(arr))[0, :, 0]
    assert list(out) == [0, 128, 255]


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    out = open_image(p)
    assert out.size == (10, 20)  # width, height swapped
    assert image_size(p) == (20, 10)
    top = np.asarray(out)[:5].mean()
    assert top > 200  # the white left half is now on top


def test_bad_files_are_errors_that_name_the_file(tmp_path, monkeypatch):
    p = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buf, "JPEG")
    p.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageError, match="trunc.jpg"):
        open_image(p)
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.jpg")
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageError, match="decompression-bomb"):
        open_image(big)


def test_arrays_tensors_and_sources(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(arr)), arr)
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(arr).permute(2, 0, 1))), arr)
    assert np.array_equal(np.asarray(load_image(arr.astype(np.float32) / 255)), arr)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((3, 4, 5, 6)))
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/c/2.png", "a.jpg", "b/1.png"):
        Image.fromarray(arr).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    src = as_source(tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in src.items] == ["a.jpg", "b/1.png", "b/c/2.png"]
    assert len(as_source([arr, arr])) == 2 and len(as_source(arr)) == 1


def test_resized_size_follows_torchvision():
    from torchvision.transforms.v2 import functional as TF

    for h, w, q in [(375, 500, 256), (500, 375, 384), (1, 1, 224), (333, 333, 256), (10, 1000, 224)]:
        assert resized_size(h, w, q) == tuple(TF.resize(torch.zeros(1, h, w), q, antialias=True).shape[-2:])


def test_hf_dataset_source(tmp_path):
    import datasets

    arr = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(arr)] * 2, "label": [0, 1]})
    ds = ds.cast_column("img", datasets.Image())
    src = as_source(ds)
    assert src.column == "img" and len(src) == 2
    assert np.array_equal(np.asarray(src.load(1)), arr)
    with pytest.raises(ImageError, match="Image column"):
        as_source(datasets.Dataset.from_dict({"x": [1]}))
