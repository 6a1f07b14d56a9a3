"""Any picture to a model frame: centre crop to the model's aspect ratio, then area resize.

The same geometry as the data pipeline (genie_robot.data.reader: centre crop + area resize),
so a photo prompt looks to the model like the frames it was trained on. Cropping rather than
padding or stretching keeps object shapes; what is cut is the border of the longer side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def fit_image(image: np.ndarray | str | Path, resolution: tuple[int, int] | list[int]) -> np.ndarray:
    """uint8 [3, H, W] at `resolution` (H, W) from an HxW, HxWx3 or HxWx4 array or an image file."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        try:
            pil = Image.open(path)
            pil.load()
        except OSError as e:
            raise ValueError(f"{path} is not a readable image: {e}") from e
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(f"image must be uint8 HxW, HxWx3 or HxWx4, got {arr.dtype} {arr.shape}")
        pil = Image.fromarray(arr)
    pil = pil.convert("RGB")
    h, w = int(resolution[0]), int(resolution[1])
    src_w, src_h = pil.size
    if src_w == 0 or src_h == 0:
        raise ValueError("image has zero width or height")
    # Largest centred crop with the target aspect ratio.
    crop_w, crop_h = (src_w, round(src_w * h / w)) if src_w * h <= src_h * w else (round(src_h * w / h), src_h)
    left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
    pil = pil.crop((left, top, left + crop_w, top + crop_h)).resize((w, h), Image.Resampling.BOX)
    return np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1).copy()
