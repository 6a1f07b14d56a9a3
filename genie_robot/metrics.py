"""Evaluation metrics: PSNR (numpy or torch); latent-action quality and Fréchet distance (numpy).

Latent actions are never trained on the dataset's action labels; these metrics ask how much of
the real action they capture. Real action vectors are standardized and clustered with k-means
(k = the number of latent actions), then NMI(latent codes, clusters) is reported; and a k-nearest
neighbour classifier predicts the latent code from the real action on held-out transitions,
next to the majority-class baseline it has to beat.
"""

from __future__ import annotations

import numpy as np


def psnr(pred, target, peak: float = 255.0):
    """PSNR (dB) of each image of [..., C, H, W]: shape [...].

    numpy uint8 images (peak 255, computed in float64), or torch tensors in [0, peak] (training
    takes peak 1 on its float frames; the prediction is clamped to the valid range first).
    """
    if isinstance(pred, np.ndarray):
        err = (pred.astype(np.float64) - np.asarray(target, np.float64)) / peak
        mse = (err**2).reshape(*err.shape[:-3], -1).mean(-1)
        return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    mse = ((pred.clamp(0, peak) - target) / peak).pow(2).flatten(-3).mean(-1)
    return 10 * mse.clamp(min=1e-10).reciprocal().log10()


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n); 0 for a single value): the spread benchmarks report."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def ssim(pred_u8: np.ndarray, target_u8: np.ndarray) -> float:
    """Mean SSIM (torchmetrics: 11x11 Gaussian window, data range 1) of uint8 images [N, 3, H, W]."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    to = lambda x: torch.from_numpy(np.ascontiguousarray(x)).float().div(255.0)  # noqa: E731
    return float(structural_similarity_index_measure(to(pred_u8), to(target_u8), data_range=1.0))


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Cluster labels of the rows of x (Lloyd's algorithm, k-means++ seeding)."""
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        centers.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.array(centers)
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        labels = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return labels


def _entropy(labels: np.ndarray) -> float:
    p = np.unique(labels, return_counts=True)[1] / len(labels)
    return float(-(p * np.log(p)).sum())


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized mutual information (arithmetic mean normalization), in [0, 1]."""
    ha, hb = _entropy(a), _entropy(b)
    if ha == 0 or hb == 0:
        return 0.0
    joint = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True)[1].reshape(-1)
    return float(2 * (ha + hb - _entropy(joint)) / (ha + hb))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> tuple[float, float]:
    """(accuracy of k-NN trained on a random half and tested on the other, majority-class accuracy)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    if len(train) == 0 or len(test) == 0:
        return float("nan"), float("nan")
    d = ((features[test][:, None] - features[train][None]) ** 2).sum(-1)
    nearest = labels[train][np.argsort(d, axis=1, kind="stable")[:, : min(k, len(train))]]
    pred = np.array([np.bincount(row).argmax() for row in nearest])
    majority = np.bincount(labels[train]).argmax()
    return float((pred == labels[test]).mean()), float((labels[test] == majority).mean())


def standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (FVD/FID's formula)."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    # tr(sqrt(A B)) = sum of sqrt of the eigenvalues of sqrt(A) B sqrt(A), which is symmetric PSD.
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
