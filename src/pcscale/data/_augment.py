"""The reference implementation's one-off CIFAR augmentation, in NumPy (docs/background.md §6.2)."""

from __future__ import annotations

import numpy as np


def reference_augment(images: np.ndarray, *, padding: int = 4, seed: int = 0) -> np.ndarray:
    """Augment a batch once, as the paper's reference code did for its fixed CIFAR-10
    batch: pad each image by `padding` zeros on every side, crop a random window of the
    original size, and flip it horizontally with probability 1/2. The reference also
    rotated by up to ±10°; that step is omitted (the torchvision pipeline cannot be
    reproduced exactly without torchvision). Off by default everywhere: record when used.

    **Arguments:** `images` (N, C, H, W); `padding` (default 4); `seed` for
    `numpy.random.default_rng`.

    **Returns:** the augmented batch, same shape and dtype.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"`images` must be a (N, C, H, W) batch, got shape {images.shape}.")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"`padding` must be a non-negative integer, got {padding!r}; the reference uses 4.")
    n, _, height, width = images.shape
    rng = np.random.default_rng(seed)
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = rng.integers(0, 2 * padding + 1, n)
    cols = rng.integers(0, 2 * padding + 1, n)
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for index in range(n):
        crop = padded[index, :, rows[index]: rows[index] + height, cols[index]: cols[index] + width]
        out[index] = crop[..., ::-1] if flips[index] else crop
    return out
