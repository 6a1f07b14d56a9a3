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
