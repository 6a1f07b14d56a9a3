"""Per-patch k-means PSNR bound: how well any tokenizer that codes each patch alone could do.

    python scripts/tokenizer_bounds.py [dataset path] [codes]

k-means (Lloyd, 25 iterations) with `codes` centroids on 200k patches of training frames,
PSNR of the nearest-centroid reconstruction of the validation frames, for several
(resolution, patch) pairs that give the demo's 320 tokens per frame or 4x that.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from genie_robot.data.reader import ClipDataset, DataConfig


def frames(path: str, split: str, limit: int) -> torch.Tensor:
    cfg = DataConfig(path=path, clip_frames=8, resolution=[64, 80], batch_size=32, drop_remainder=False)
    out, n = [], 0
    for b in ClipDataset(cfg, split):
        out.append(b["frames"].flatten(0, 1))
        n += len(out[-1])
        if n >= limit:
            break
    return torch.cat(out)[:limit].float() / 255


def patches(x: torch.Tensor, p: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c * p * p)


def bound(train: torch.Tensor, val: torch.Tensor, hw: tuple[int, int], p: int, k: int) -> float:
    a = F.interpolate(train, size=hw, mode="area")
    b = F.interpolate(val, size=hw, mode="area")
    x = patches(a, p)
    x = x[torch.randperm(len(x))[:200_000]]
    c = x[torch.randperm(len(x))[:k]].clone()
    for _ in range(25):
        idx = torch.cdist(x, c).argmin(1)
        s = torch.zeros_like(c).index_add_(0, idx, x)
        n = torch.bincount(idx, minlength=k).float()
        c = torch.where(n[:, None] > 0, s / n.clamp(min=1)[:, None], x[torch.randint(0, len(x), (k,))])
    v = patches(b, p)
    mse = ((v - c[torch.cdist(v, c).argmin(1)]) ** 2).mean()
    return float(10 * torch.log10(1 / mse))


if __name__ == "__main__":
    torch.manual_seed(0)
    path = sys.argv[1] if len(sys.argv) > 1 else "outputs/sim/fractal20220817_data/0.1.0"
    codes = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    train, val = frames(path, "train", 2400), frames(path, "val", 360)
    for hw, p in [((64, 80), 4), ((48, 60), 3), ((32, 40), 2), ((64, 80), 2)]:
        print(f"{hw[0]}x{hw[1]} patch {p}: {bound(train, val, hw, p, codes):.2f} dB", flush=True)
