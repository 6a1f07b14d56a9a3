"""Pictures people look at: rollout GIFs and labelled PNG grids (rows of frames), upscaled.

Model frames are small (64x80 for the demo), so everything is enlarged with nearest-neighbour
sampling (no invented detail) before it is written.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw

LABEL_H = 14


def _hwc(frame_CHW: np.ndarray, scale: int) -> np.ndarray:
    img = np.asarray(frame_CHW, dtype=np.uint8).transpose(1, 2, 0)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def save_gif(frames_TCHW: np.ndarray, path: str | Path, fps: float = 3.0, scale: int = 4) -> Path:
    """An endlessly looping GIF of uint8 [T, 3, H, W] frames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack([_hwc(f, scale) for f in frames_TCHW]), duration=1000 / fps, loop=0)
    return path


def grid(rows: list[np.ndarray], labels: list[str], scale: int = 2, gap: int = 2) -> np.ndarray:
    """One uint8 HxWx3 image: a labelled row per [T, 3, H, W] array (rows may differ in length)."""
    tiles = [[_hwc(f, scale) for f in row] for row in rows]
    th, tw, _ = tiles[0][0].shape
    width = max(len(r) for r in tiles) * (tw + gap) - gap
    out = Image.new("RGB", (max(width, 1), len(tiles) * (th + LABEL_H + gap)), "white")
    draw = ImageDraw.Draw(out)
    for i, (row, label) in enumerate(zip(tiles, labels, strict=True)):
        y = i * (th + LABEL_H + gap)
        draw.text((2, y + 1), label, fill="black")
        for j, tile in enumerate(row):
            out.paste(Image.fromarray(tile), (j * (tw + gap), y + LABEL_H))
    return np.asarray(out)


def save_png(image_HWC: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_HWC).save(path)
    return path


BAND_COLOURS = ((46, 139, 87), (178, 34, 34), (112, 112, 112))


def line_chart(xs: list[float], ys: list[float], cis: list[tuple[float, float]],
               bands: dict[str, tuple[float, tuple[float, float]]], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (720, 440)) -> Image.Image:
    """A rate (0..1) over a log-scaled x, with its intervals as error bars, and reference levels as shaded bands.

    Written with Pillow alone (no plotting library in the install): success over labelled episodes, Genie's
    figure of the latent-action agent against the oracle and random agents."""
    w, h = size
    left, right, top, bottom = 60, 20, 34, 78
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    lx = np.log10(np.maximum(np.asarray(xs, dtype=float), 1e-9))
    span = float(lx.max() - lx.min()) or 1.0
    x0, x1 = float(lx.min()) - 0.05 * span, float(lx.max()) + 0.05 * span  # room for the end bars

    def px(x: float) -> float:
        return left + (np.log10(x) - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return top + (1 - y) * (h - top - bottom)

    for i, (name, (level, (lo, hi))) in enumerate(bands.items()):  # reference levels behind the curve
        colour = BAND_COLOURS[i % len(BAND_COLOURS)]
        pale = tuple(int(c + (255 - c) * 0.8) for c in colour)
        draw.rectangle([left, py(hi), w - right, py(lo)], fill=pale)
        draw.line([left, py(level), w - right, py(level)], fill=colour, width=2)
        draw.text((left + 8, h - bottom + 34 + 12 * i), f"- {name}: {level:.2f} [{lo:.2f}, {hi:.2f}]", fill=colour)
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([left - 4, py(tick), left, py(tick)], fill="black")
        draw.text((left - 32, py(tick) - 6), f"{tick:.2f}", fill="black")
    points = [(px(x), py(y)) for x, y in zip(xs, ys, strict=True)]
    for x, (lo, hi) in zip(xs, cis, strict=True):
        draw.line([px(x), py(hi), px(x), py(lo)], fill="navy", width=1)
        draw.line([px(x) - 4, py(hi), px(x) + 4, py(hi)], fill="navy")
        draw.line([px(x) - 4, py(lo), px(x) + 4, py(lo)], fill="navy")
    draw.line(points, fill="navy", width=2)
    for (cx, cy), x in zip(points, xs, strict=True):
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill="navy")
        draw.text((cx - 6, h - bottom + 4), f"{x:g}", fill="black")
    draw.text((left, 8), title, fill="black")
    draw.text((left, h - bottom + 18), f"{xlabel}; the curve: latent agent, bars: 95% intervals", fill="black")
    draw.text((4, top - 16), ylabel, fill="black")
    return img
