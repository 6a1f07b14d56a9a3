"""Where a played world starts: a held-out sim frame, an uploaded picture, or (`genie_robot.play.camera`) a
ROS 2 camera's latest frame. Every start is fitted to the model's frame as `genie-robot imagine` fits its prompt
(`genie_robot.core.image.fit_image`: centre crop to the aspect ratio, area resize)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genie_robot.core.image import fit_image
from genie_robot.play.session import PlayError

log = logging.getLogger(__name__)

# What an upload may be: the formats browsers and phones produce, by content (never by file name).
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class UploadError(PlayError):
    status = 415


class TooLarge(PlayError):
    status = 413


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000  # a decompression bomb is refused before it is decoded


def check_size(size: int, limits: UploadLimits, partial: bool = False) -> None:
    """TooLarge for an upload of `size` bytes over the limit (`partial`: counted so far, the rest unread)."""
    if size > limits.max_bytes:
        raise TooLarge(f"the upload is {'over ' if partial else ''}{size / 2**20:.1f} MiB; the most this server "
                       f"takes is {limits.max_bytes / 2**20:.0f} MiB")


def decode_upload(data: bytes, limits: UploadLimits, resolution) -> np.ndarray:
    """uint8 [3, H, W] at `resolution` from an uploaded file's bytes, or an error that says what was wrong."""
    check_size(len(data), limits)
    if not data:
        raise UploadError("the upload is empty; expected an image file (PNG, JPEG, WebP, GIF or BMP)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            if fmt not in UPLOAD_FORMATS:
                raise UploadError(f"the upload is a {fmt} image; accepted: {', '.join(UPLOAD_FORMATS)}")
            w, h = img.size
            if w * h > limits.max_pixels:
                raise TooLarge(f"the upload is {w}x{h} pixels; the most this server decodes is "
                               f"{limits.max_pixels / 1e6:g} megapixels")
            img.seek(0)  # the first frame of an animation
            rgb = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise UploadError("the upload is not an image this server can read; expected a PNG, JPEG, WebP, GIF or "
                          "BMP file") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, PlayError):
            raise
        raise UploadError(f"the upload is a damaged image: {e}") from None
    return fit_image(rgb, resolution)


def heldout_frames(path: str | Path | None, resolution, count: int) -> tuple[list[np.ndarray], str]:
    """Up to `count` start frames from a held-out dataset (first frames of clips spread over it), and a line
    that says where they came from or why there are none."""
    if not path:
        return [], "no held-out dataset configured (play.start_data)"
    root = Path(path)
    if not (root / "dataset_info.json").is_file():
        return [], (f"no held-out dataset at {root}: make demo writes one (or `genie-robot sim sim.out=outputs/heldout "
                    f"sim.seed=1001 sim.episodes=16`); upload an image instead")
    from genie_robot.data.reader import DataConfig, read_clips

    h, w = resolution
    cfg = DataConfig(path=str(root), resolution=[h, w], clip_frames=2, clip_hop=10, val_fraction=1.0, batch_size=8,
                     action_keys=[])
    try:
        frames, _ = read_clips(cfg, "val", 4 * count, [])
    except (ValueError, OSError) as e:
        log.warning("held-out start frames from %s: %s", root, e)
        return [], f"the held-out dataset at {root} cannot be read: {e}"
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return [frames[i, 0] for i in picks], f"held-out sim frames from {root}"
