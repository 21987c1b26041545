"""Image arrays that need no format reader: the 8 × 8 digits shipped with pcscale and a
pre-extracted ImageNet batch, with the helpers they share with `load`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

IMAGENET_POOL = 1000  # docs/background.md §6.2: the first 1000 training images in stream order
DIGITS_SIZES = {"train": 1500, "test": 297}  # the 1,797 bundled digits, split at 1,500


def unit(images: np.ndarray) -> np.ndarray:
    """uint8 pixels to float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def check_labels(labels: np.ndarray, classes: int, path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"{path}: labels range over [{labels.min()}, {labels.max()}], expected [0, {classes}); the file "
            "is corrupt or not the dataset it claims to be."
        )


def imagenet_batch(path: Path):
    """A pre-extracted batch: `images` uint8 (N, 3, 224, 224), already resized and cropped,
    in the dataset's stream order, and `labels` (N,) standard class indices 0 … 999."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{path} is not a pre-extracted ImageNet batch ({error}); it must be an .npz with `images` "
            "uint8 (N, 3, 224, 224) and `labels` (N,) in 0 … 999 (docs/data.md)."
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 224, 224) or len(labels) != len(images):
        raise ValueError(
            f"{path}: `images` is {images.dtype} {images.shape} with {len(labels)} labels; expected uint8 "
            "(N, 3, 224, 224) and N labels."
        )
    check_labels(labels, 1000, path)
    names = tuple(str(c) for c in range(1000))
    return unit(images[:IMAGENET_POOL]), labels[:IMAGENET_POOL].astype(np.int64), names, str(path)


def digits(split: str):
    """The 8 × 8 digits shipped in the package (digits.npz; source and licence in
    DIGITS_NOTICE.txt beside it): scikit-learn's `load_digits`, without scikit-learn."""
    with resources.files("pcscale.data").joinpath("digits.npz").open("rb") as file, np.load(file) as archive:
        images = (archive["images"] / 16.0).astype(np.float32)  # grey levels 0 … 16
        labels = archive["labels"].astype(np.int64)
    # A fixed split (the set ships none): the last 297 digits are the test set.
    cut = DIGITS_SIZES["train"]
    part = slice(0, cut) if split == "train" else slice(cut, None)
    # The source as results folders record it since 0.1 (the same images as scikit-learn's),
    # kept so that finished cells stay valid.
    return images[part, None], labels[part], tuple(str(c) for c in range(10)), "scikit-learn (bundled)"
