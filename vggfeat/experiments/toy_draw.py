"""The drawing primitives of :mod:`vggfeat.toy`: shapes filled with textures in palette colours,
painted on a cluttered background, and the slight blur that finishes every image.

Every function draws from the generator it is given and nothing else, so an image is the same
bytes whatever was drawn before it. A change here changes the generated data: bump
:data:`vggfeat.toy.VERSION` with it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
TEXTURES = ("solid", "stripes", "dots", "checker")
PALETTE = np.array(
    [(220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 200, 30), (200, 60, 200), (30, 190, 200),
     (245, 130, 30), (240, 240, 240), (30, 30, 30)],
    dtype=np.uint8,
)  # fmt: skip
CONTEXT_PULL = 0.5  # how far the background's smooth part moves towards a context colour


def _polygon(shape: str) -> list[tuple[float, float]] | None:
    """Outline in unit coordinates ([0, 1]^2, y down); None for the circle (an ellipse)."""
    if shape == "square":
        return [(0.08, 0.08), (0.92, 0.08), (0.92, 0.92), (0.08, 0.92)]
    if shape == "triangle":
        return [(0.5, 0.04), (0.97, 0.93), (0.03, 0.93)]
    if shape == "diamond":
        return [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    if shape == "cross":
        a, b = 0.33, 0.67  # the arms' edges
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a),
                (a, a)]  # fmt: skip
    if shape == "star":
        ang = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
        rad = [0.5 if k % 2 == 0 else 0.2 for k in range(10)]
        return [(0.5 + r * math.cos(t), 0.53 + r * math.sin(t)) for r, t in zip(rad, ang)]
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """(h, w) bool mask of ``shape`` filling a w x h box."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    pts = _polygon(shape)
    if pts is None:
        draw.ellipse([0, 0, w - 1, h - 1], fill=255)
    else:
        draw.polygon([(x * (w - 1), y * (h - 1)) for x, y in pts], fill=255)
    return np.asarray(img) > 127


def texture_mask(texture: str, w: int, h: int, period: float) -> np.ndarray:
    """(h, w) bool: True where the texture shows its second colour. The period scales with the
    object, as real textures do, so the texture is seen at every scale the object is."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / period
    if texture == "solid":
        return np.zeros((h, w), bool)
    if texture == "stripes":
        return np.floor(xx + yy).astype(int) % 2 == 1
    if texture == "dots":
        return (xx % 1 - 0.5) ** 2 + (yy % 1 - 0.5) ** 2 < 0.3**2
    if texture == "checker":
        return (np.floor(xx) + np.floor(yy)).astype(int) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}; choose one of {TEXTURES}")


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = rng.choice(len(PALETTE), size=2, replace=False)
    return PALETTE[i], PALETTE[j]


def draw_part(canvas: np.ndarray, rng: np.random.Generator, shape: str, texture: str, box) -> None:
    """Paint one primitive into ``canvas`` (H, W, 3 uint8) inside ``box`` = (x0, y0, w, h) px,
    which may lie partly outside the canvas (the part is clipped)."""
    x0, y0, w, h = (int(round(v)) for v in box)
    w, h = max(w, 3), max(h, 3)
    H, W = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    a, b = _colours(rng)
    pix = np.where(texture_mask(texture, w, h, max(2.0, min(w, h) / 5))[..., None], b, a)
    m = shape_mask(shape, w, h)[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = canvas[cy0:cy1, cx0:cx1]
    region[m] = pix[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0][m]


def clutter(rng: np.random.Generator, w: int, h: int, tint=None) -> np.ndarray:
    """A cluttered background (H, W, 3 uint8): smooth colour variation, pixel noise and random
    line segments in the objects' colours, so colour and edges alone do not find the objects.
    ``tint`` (an RGB colour) pulls the smooth part :data:`CONTEXT_PULL` of the way towards it (context)."""
    low = rng.integers(60, 200, size=(4, 4, 3), dtype=np.uint8)
    if tint is not None:
        low = ((1 - CONTEXT_PULL) * low + CONTEXT_PULL * np.array(tint)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR), dtype=np.int16)
    base = base + rng.integers(-18, 19, size=(h, w, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 20) * w * h / 80_000) + 2):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        t, r = rng.uniform(0, math.pi), rng.uniform(5, 0.3 * max(w, h))
        colour = tuple(int(c) for c in PALETTE[rng.integers(len(PALETTE))])
        draw.line(
            [(x, y), (x + r * math.cos(t), y + r * math.sin(t))], fill=colour, width=int(rng.integers(1, 4))
        )
    return np.array(img)


def finish(canvas: np.ndarray) -> Image.Image:
    # A slight blur stands in for camera optics: hard aliased edges are not what images look like.
    return Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(0.6))
