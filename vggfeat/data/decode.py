"""Images in, one way: every input kind decodes to the same RGB image (docs/architecture.md).

- EXIF orientation applied (as Hugging Face datasets does; torchvision's loader does not);
- 16-bit and 32-bit integer/float modes scaled to 8 bit by their range, not clipped;
- transparency composited on white (RGBA, LA, palette with transparency);
- CMYK, palette, grayscale and 1-bit converted to RGB;
- Pillow's decompression-bomb limit kept, and its warning treated as an error;
- truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set);
- float arrays and tensors hold pixels in [0, 1] (scaled by 255 and rounded); values beyond
  that range by more than half an 8-bit level, NaN and infinity are errors naming the image
  (a NaN row under ``on_error="skip"``), never clipped to a black or white image in silence;
  uint8 and uint16 (scaled by 65535) arrays hold their full range.

:func:`as_source` turns what users pass (paths, a directory, PIL images, arrays, tensors, a
Hugging Face ``datasets.Dataset``, a torch Dataset) into an indexable :class:`ImageSource`.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import SequentialSampler
from torchvision.transforms.v2 import functional as TF

from ..errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


def _to_8bit(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.dtype == np.uint16:
        arr = arr.astype(np.float64) / 65535.0
    elif img.mode == "I":
        info = np.iinfo(np.int32)
        hi = 65535.0 if arr.min() >= 0 and arr.max() <= 65535 else float(info.max)
        arr = np.clip(arr.astype(np.float64) / hi, 0, 1)
    else:  # "F": assume [0, 1] floats unless the values say otherwise
        arr = arr.astype(np.float64)
        hi = arr.max()
        arr = np.clip(arr / (hi if hi > 1 else 1.0), 0, 1)
    return Image.fromarray(np.round(arr * 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """A decoded PIL image -> upright RGB (see the module docstring for the rules)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(bg, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(path) -> Image.Image:
    """Decode an image file to RGB; any failure is an :class:`ImageError` naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(
            f"{path}: larger than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS} pixels): {e}. Raise PIL.Image.MAX_IMAGE_PIXELS "
            "if you trust the file."
        ) from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Exception as e:
        raise ImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def _array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageError(
            f"{name}: array of shape {arr.shape} is not an image; expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    if arr.dtype == np.uint16:
        arr = np.round(arr / 257.0).astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = np.round(np.clip(_checked_floats(arr, name), 0, 1) * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(
            f"{name}: array dtype {arr.dtype} not supported; use uint8, uint16 or float in [0, 1]"
        )
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr if mode != "L" else arr[..., 0]), mode))


FLOAT_SLACK = 0.5 / 255  # floats this far outside [0, 1] still round to 0 or 255


def _checked_floats(arr: np.ndarray, name: str) -> np.ndarray:
    """Float pixels must be finite and in [0, 1] (module docstring)."""
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ImageError(
            f"{name}: {bad} of its {arr.size} float values are NaN or infinite; pass finite pixels in [0, 1]"
        )
    lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
    if lo < -FLOAT_SLACK:  # 0-255 or [0, 1] pixels are never negative: mean/std normalised ones are
        raise ImageError(
            f"{name}: float pixels range over [{lo:g}, {hi:g}], which looks already normalised "
            "(torchvision's T.Normalize); drop Normalize from the transform and pass pixels in "
            "[0, 1] (T.ToTensor() alone): vggfeat applies the weights' own preprocessing"
        )
    if hi > 1 + FLOAT_SLACK:
        raise ImageError(
            f"{name}: float pixels range over [{lo:g}, {hi:g}], but float images must lie in "
            "[0, 1]; divide 0-255 values by 255, or pass uint8"
        )
    return arr


def load_image(item, name: str = "image") -> Image.Image:
    """One input of any supported kind -> RGB PIL image."""
    if isinstance(item, (str, os.PathLike)):
        return open_image(item)
    if isinstance(item, Image.Image):
        try:
            item.load()
        except Exception as e:
            raise ImageError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None
        return to_rgb(item)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):  # HF Image(decode=False)
        src = io.BytesIO(item["bytes"]) if item.get("bytes") else item.get("path")
        return open_image(src) if not isinstance(src, io.BytesIO) else _open_bytes(src, name)
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        return _array_to_pil(t.numpy(), name)
    if isinstance(item, np.ndarray):
        return _array_to_pil(item, name)
    raise ImageError(
        f"{name}: unsupported input type {type(item).__name__}; pass a path, PIL image, numpy array or tensor"
    )


def _open_bytes(buf, name):
    try:
        return open_image(buf)
    except ImageError as e:
        raise ImageError(f"{name}: {str(e).split(': ', 1)[-1]}") from None


def image_size(item) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read from the header where possible."""
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as img:
                w, h = img.size
                if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
                    w, h = h, w
                return h, w
        except Exception:
            return (0, 0)  # reported when the image is decoded
    if isinstance(item, Image.Image):
        w, h = item.size
        exif = item.getexif() if hasattr(item, "getexif") else {}
        return (w, h) if exif.get(0x0112, 1) in (5, 6, 7, 8) else (h, w)
    if isinstance(item, torch.Tensor):
        return (
            tuple(item.shape[-2:]) if item.ndim == 3 and item.shape[0] in (1, 3, 4) else tuple(item.shape[:2])
        )
    if isinstance(item, np.ndarray):
        return tuple(item.shape[:2])
    return (0, 0)  # unknown without decoding


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor."""
    return TF.pil_to_tensor(img)


def resize_smallest(img: torch.Tensor, q: int) -> torch.Tensor:
    """Sec. 3.2: isotropic rescale so the smallest side is ``q`` (bilinear, antialiased), on the
    uint8 (3, H, W) image as torchvision's transforms do (its fast uint8 path); stays uint8."""
    return img if min(img.shape[-2:]) == q else TF.resize(img, q, antialias=True)


def rescale(img: torch.Tensor, q: int) -> torch.Tensor:
    """:func:`resize_smallest`, then float in [0, 1]."""
    return resize_smallest(img, q).float().div_(255)


def resized_size(h: int, w: int, q: int) -> tuple[int, int]:
    """The (height, width) :func:`rescale` produces, by torchvision's own rule."""
    if min(h, w) == q:
        return h, w
    return tuple(TF._geometry._compute_resized_output_size((h, w), size=[q], max_size=None))


class ImageSource(Sequence):
    """Indexable view of the user's images: ``source[i]`` is the raw item, ``name(i)`` a label
    for messages (path or index), ``load(i)`` the decoded RGB image."""

    def __init__(self, items, names=None, column: str | None = None, kind: str = "list"):
        self.items, self._names, self.column, self.kind = items, names, column, kind

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        if self.kind == "hf":
            return item[self.column]
        if self.kind == "torch":
            return item[0] if isinstance(item, (tuple, list)) else item
        return item

    def name(self, i: int) -> str:
        return str(self._names[i]) if self._names is not None else f"image #{i}"

    def load(self, i: int) -> Image.Image:
        return load_image(self[i], self.name(i))

    def size(self, i: int) -> tuple[int, int]:
        if self.kind == "hf":
            return (0, 0)
        return image_size(self[i])

    def paths(self) -> list[str] | None:
        return [str(n) for n in self._names] if self._names is not None else None


class SubsetSource(ImageSource):
    """The images ``indices`` of ``source``, read lazily (the ones a store lacks)."""

    def __init__(self, source: ImageSource, indices: list[int]):
        super().__init__(source.items, column=source.column, kind=source.kind)
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        return self.source[self.indices[k]]

    def name(self, k: int) -> str:
        return self.source.name(self.indices[k])

    def load(self, k: int):
        return self.source.load(self.indices[k])

    def size(self, k: int) -> tuple[int, int]:
        return self.source.size(self.indices[k])

    def paths(self):
        return None


def list_images(root) -> list[Path]:
    """Image files under ``root``, recursively, in sorted order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ImageError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files


def hf_image_column(ds) -> str:
    """The image column of a Hugging Face dataset (the first feature of type Image)."""
    from datasets import Image as HFImage  # deferred: datasets costs seconds to import

    cols = [k for k, f in ds.features.items() if isinstance(f, HFImage)]
    if not cols:
        raise ImageError(
            f"the dataset has no Image column (features: {list(ds.features)}); cast "
            "one with ds.cast_column(name, datasets.Image()) or pass image_column="
        )
    return cols[0]


def loader_dataset(loader):
    """A torch ``DataLoader`` -> its dataset, read in the loader's order (images, or (image,
    label) pairs). vggfeat batches by image size itself, so the loader's batches are not used;
    a loader that shuffles or samples is refused, since its order is not the dataset's."""

    if not isinstance(loader.sampler, SequentialSampler):
        raise ImageError(
            f"a DataLoader with a {type(loader.sampler).__name__} reads its images in its own order; "
            "pass its dataset instead, extract(loader.dataset) (vggfeat batches by image size itself)"
        )
    return loader.dataset


def as_source(images, image_column: str | None = None) -> ImageSource:
    """Wrap any supported collection of images as an :class:`ImageSource`."""
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, (str, os.PathLike)):
        p = Path(images)
        if p.is_dir():
            files = list_images(p)
            return ImageSource(files, names=files)
        return ImageSource([p], names=[p])
    datasets = sys.modules.get("datasets")  # a Dataset object means the library is imported
    if datasets is not None:
        if isinstance(images, datasets.Dataset):
            col = image_column or hf_image_column(images)
            if col not in images.column_names:
                raise ImageError(f"image_column {col!r} is not in the dataset {images.column_names}")
            return ImageSource(images, column=col, kind="hf")
    if isinstance(images, torch.utils.data.DataLoader):
        images = loader_dataset(images)
    if isinstance(images, torch.utils.data.Dataset) and not isinstance(images, Sequence):
        return ImageSource(images, kind="torch")
    if isinstance(images, np.ndarray) and (
        images.ndim == 4 or (images.ndim == 1 and images.dtype.kind in "USO")
    ):
        images = images.tolist() if images.ndim == 1 else list(images)  # paths (or objects); a batch
    if isinstance(images, (Image.Image, np.ndarray)) or (
        isinstance(images, torch.Tensor) and images.ndim == 3
    ):
        images = [images]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    items = list(images)
    names = [Path(x) if isinstance(x, (str, os.PathLike)) else f"image #{i}" for i, x in enumerate(items)]
    return ImageSource(items, names=names)
