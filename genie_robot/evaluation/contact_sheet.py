"""A PNG contact sheet: a row per episode, frames spread over its length, instruction on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from genie_robot.data.layout import read_layout
from genie_robot.data.validate import open_builder


def contact_sheet(path: str, out: str, episodes: int = 6, frames: int = 6, image_key: str = "image") -> Path:
    """Full-resolution frames from the first `episodes` episodes of `path`'s train split."""
    layout = read_layout(path)
    h, w, _ = layout.image_spec(image_key).shape
    ds = open_builder(layout.path).as_dataset(split=f"train[:{episodes}]", shuffle_files=False)
    label_h = 18
    rows = []
    for ep in ds:
        steps = list(ep["steps"].as_numpy_iterator())
        pick = np.linspace(0, len(steps) - 1, frames).round().astype(int)
        strip = np.concatenate([steps[i]["observation"][image_key] for i in pick], axis=1)
        row = Image.new("RGB", (strip.shape[1], h + label_h), "white")
        row.paste(Image.fromarray(strip), (0, label_h))
        text = steps[0]["observation"].get("natural_language_instruction", b"")
        text = text.decode() if isinstance(text, bytes) else str(text)
        ImageDraw.Draw(row).text((4, 3), f"{text}  (steps {', '.join(map(str, pick))} of {len(steps)})", fill="black")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the train split has no episodes to show")
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path
