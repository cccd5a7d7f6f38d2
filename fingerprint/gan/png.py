"""PNG writing with zlib and struct: sample sheets and plots need no imaging library."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a uint8 image, H x W (grey) or H x W x 3 (RGB), as an 8-bit PNG."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"expected uint8 H x W or H x W x 3, found {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
    with open(path, "wb") as f:
        f.write(data + _chunk(b"IEND", b""))


def spectrogram_image(patches: np.ndarray, columns: int, scale: int = 2, gap: int = 2) -> np.ndarray:
    """A grid of patches (n x frames x bands, values in [-1, 1]) as a grey image, low bands at the bottom."""
    n, frames, bands = patches.shape
    rows = -(-n // columns)
    cell_w, cell_h = frames * scale + gap, bands * scale + gap
    image = np.full((rows * cell_h + gap, columns * cell_w + gap), 255, np.uint8)
    for k, patch in enumerate(patches):
        tile = np.clip((1.0 - patch.T[::-1]) * 127.5, 0, 255).astype(np.uint8)  # dark = loud
        tile = np.kron(tile, np.ones((scale, scale), np.uint8))
        top, left = gap + (k // columns) * cell_h, gap + (k % columns) * cell_w
        image[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return image


# 3 x 5 pixel digits for tick labels, one string of 15 bits per glyph (rows top to bottom).
_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", "-": "000000111000000", ".": "000000000000010",
}  # fmt: skip


def _text(image: np.ndarray, text: str, x: int, y: int, scale: int = 2) -> None:
    """Draw digits with their top-left corner at (x, y), in black."""
    for k, char in enumerate(text):
        glyph = np.array([int(b) for b in _DIGITS[char]], bool).reshape(5, 3)
        block = np.kron(glyph, np.ones((scale, scale), bool))
        left = x + k * 4 * scale
        region = image[y : y + block.shape[0], left : left + block.shape[1]]
        region[block[: region.shape[0], : region.shape[1]]] = 0


def _line(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int], width: int) -> None:
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for t in np.linspace(0.0, 1.0, steps):
        x, y = int(round(x0 + t * (x1 - x0))), int(round(y0 + t * (y1 - y0)))
        image[max(0, y - width // 2) : y + width // 2 + 1, max(0, x - width // 2) : x + width // 2 + 1] = colour


def line_plot(
    series: list[tuple[list[float], list[float], tuple[int, int, int]]],
    y_range: tuple[float, float],
    size: tuple[int, int] = (640, 400),
    y_ticks: int = 5,
) -> np.ndarray:
    """An RGB line chart: each series (x values, y values, colour) as a line with square markers.

    Ticks are labelled with numbers (x ticks at the data's x values); what the
    axes and colours mean is for the caption, this chart carries no words.
    """
    width, height = size
    left, right, top, bottom = 60, 20, 20, 40
    image = np.full((height, width, 3), 255, np.uint8)
    xs = sorted({x for s in series for x in s[0]})
    x_lo, x_hi = (xs[0], xs[-1]) if len(xs) > 1 else (xs[0] - 1, xs[0] + 1)
    y_lo, y_hi = y_range

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    for k in range(y_ticks + 1):
        y = y_lo + k * (y_hi - y_lo) / y_ticks
        _line(image, left, py(y), width - right, py(y), (225, 225, 225), 1)
        label = f"{y:g}"
        _text(image, label, left - 8 - 8 * len(label), int(py(y)) - 5)
    for x in xs:
        _line(image, px(x), top, px(x), height - bottom, (225, 225, 225), 1)
        label = f"{x:g}"
        _text(image, label, int(px(x)) - 4 * len(label), height - bottom + 10)
    _line(image, left, top, left, height - bottom, (0, 0, 0), 1)
    _line(image, left, height - bottom, width - right, height - bottom, (0, 0, 0), 1)
    for x_values, y_values, colour in series:
        points = sorted(zip(x_values, y_values))
        for (xa, ya), (xb, yb) in zip(points[:-1], points[1:]):
            _line(image, px(xa), py(ya), px(xb), py(yb), colour, 3)
        for x, y in points:
            cx, cy = int(px(x)), int(py(y))
            image[max(0, cy - 4) : cy + 5, max(0, cx - 4) : cx + 5] = colour
    return image
