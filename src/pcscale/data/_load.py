"""One interface to every dataset: `load(name, ...)`, with the paper's preprocessing."""

from __future__ import annotations

import dataclasses
import os
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from ._bundled import DIGITS_SIZES, IMAGENET_POOL, check_labels, digits, imagenet_batch, unit
from ._cifar import read_cifar
from ._folder import read_image_folder
from ._idx import read_idx
from ._root import data_root, describe_root
from ._text import TextCorpus, read_text
from ._tinyimagenet import LazyImages, list_tiny_imagenet


class DatasetMissing(FileNotFoundError):
    """The dataset's folder (or text file) is absent from the data root: the one case in
    which [`load_or_default`][pcscale.data.load_or_default] falls back. A folder that is
    present but incomplete raises a plain `FileNotFoundError` instead."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Images (or any fixed-size inputs) with class labels, preprocessed.

    - `x`: float32 inputs, (N, C, H, W) or flattened channel-major (N, C·H·W).
    - `y`: float32 one-hot targets (N, classes), or int64 labels (N,).
    - `labels`: int64 class indices (N,), always.
    - `class_names`: one name per class.
    - `name`: the dataset actually used (e.g. "digits"); `source`: where it came from
      (a path, or the package it ships with); `substitute_for`: the dataset that was asked
      for when this is a fallback, else None.
    - `indices`: the positions of the samples in the split (the deterministic subset).
    """

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    source: str
    split: str
    indices: np.ndarray
    substitute_for: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class _Spec:
    folder: str
    kind: str  # "idx", "cifar", "folder", "tinyimagenet", "text", "digits", "bundled-text"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    classes: int = 10
    description: str = ""


IMAGE_SETS = {
    "mnist": _Spec("mnist", "idx", (0.1307,), (0.3081,), 10, "MNIST IDX files"),
    "fashion-mnist": _Spec("fashion-mnist", "idx", (0.5,), (0.5,), 10, "Fashion-MNIST IDX files"),
    "cifar10": _Spec("cifar10", "cifar", (0.5,) * 3, (0.5,) * 3, 10, "CIFAR-10 python batches"),
    "cifar100": _Spec("cifar100", "cifar", (0.5,) * 3, (0.5,) * 3, 100, "CIFAR-100 python batches"),
    "imagenet": _Spec("imagenet", "folder", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000,
                      "a folder of class subfolders of images"),
    "tinyimagenet": _Spec("tinyimagenet", "tinyimagenet", (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
                          200, "Tiny ImageNet (official folder layout)"),
    "digits": _Spec("", "digits", (0.5,), (0.5,), 10, "the 8×8 digits shipped with pcscale (offline)"),
}
TEXT_SETS = {
    "tinyshakespeare": _Spec("tinyshakespeare", "text", description="a plain-text corpus, input.txt"),
    "shakespeare-excerpt": _Spec("", "bundled-text", description="the complete Hamlet, shipped with pcscale (offline)"),
}
DATASETS = tuple(sorted(IMAGE_SETS) + sorted(TEXT_SETS))
"""The names [`load`][pcscale.data.load] accepts: the image sets ("cifar10", "cifar100",
"digits", "fashion-mnist", "imagenet", "mnist", "tinyimagenet") then the text corpora
("shakespeare-excerpt", "tinyshakespeare")."""

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"  # the top folder of the official tiny-imagenet-200.zip
SPLITS = ("train", "test")


def expected_path(name: str, root: Path, split: str = "train") -> Path:
    """The file or folder `load(name)` reads under `root`."""
    if name not in IMAGE_SETS and name not in TEXT_SETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}.")
    spec = IMAGE_SETS.get(name) or TEXT_SETS[name]
    if spec.kind == "idx":
        return root / spec.folder / IDX_FILES[split][0]
    if spec.kind == "cifar":
        return root / spec.folder / CIFAR_FOLDERS[name]
    if spec.kind == "folder":
        return root / spec.folder / split
    if spec.kind == "tinyimagenet":
        return root / spec.folder / TINY_IMAGENET_FOLDER
    if spec.kind in ("digits", "bundled-text"):
        raise ValueError(f"{name!r} ships with pcscale: it has no files under the data root.")
    return root / spec.folder / "input.txt"


def _find_idx(folder: Path, stem: str, name: str, how: str) -> Path:
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.exists():  # a folder or an unreadable file in its place: read_idx says which
            return candidate
    raise FileNotFoundError(
        f"{name}: no {folder / stem}(.gz); the data root was taken from {how}. Place the official "
        f"files there (e.g. {folder / 'train-images-idx3-ubyte.gz'}), or fetch them with "
        f"pcscale.data.download({name!r}, root)."
    )


def _read_arrays(name: str, spec: _Spec, root: Path, split: str, how: str):
    """Images in [0, 1] (float32, (N, C, H, W)), int labels, class names and a source."""
    if spec.kind in ("idx", "cifar", "folder", "tinyimagenet") and not (root / spec.folder).is_dir():
        by_hand = {"folder": "; ImageNet is gated and must be prepared by hand.",
                   "tinyimagenet": f"; download {TINY_IMAGENET_FOLDER}.zip by hand and unzip it in that folder."}
        raise DatasetMissing(
            f"{name}: no folder {root / spec.folder} (looked for {expected_path(name, root, split)}); the data "
            f"root was taken from {how}. Place the official files there (docs/data.md)"
            + by_hand.get(spec.kind, ", or fetch them with pcscale.data.download(name, root).")
        )
    if spec.kind == "idx":
        folder = root / spec.folder
        images_path = _find_idx(folder, IDX_FILES[split][0], name, how)
        labels_path = _find_idx(folder, IDX_FILES[split][1], name, how)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{name}: {images_path} holds shape {images.shape} and {labels_path} shape {labels.shape}; "
                "expected (N, 28, 28) images and N labels. Re-download the official files."
            )
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{name}: {images_path} holds {images.dtype} images of shape {images.shape[1:]} and {labels_path} "
                f"{labels.dtype} labels; expected uint8 28×28 images and integer labels. Re-download the "
                "official files."
            )
        check_labels(labels, spec.classes, labels_path)
        return unit(images[:, None]), labels.astype(np.int64), tuple(str(c) for c in range(10)), str(folder)
    if spec.kind == "cifar":
        folder = root / spec.folder / CIFAR_FOLDERS[name]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name}: no folder {folder}; the data root was taken from {how}. Unpack the official "
                f"python archive there, or fetch it with pcscale.data.download({name!r}, root)."
            )
        arrays = read_cifar(folder, split, classes=spec.classes)
        return unit(arrays.images), arrays.labels, arrays.class_names, str(folder)
    if spec.kind == "folder":
        batch = root / spec.folder / f"{split}.npz"
        if batch.is_file():
            return imagenet_batch(batch)
        folder = root / spec.folder / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name}: neither {batch} nor the folder {folder}; the data root was taken from {how}. "
                "ImageNet is gated: put a pre-extracted batch or a folder of class subfolders of images "
                "there; see docs/data.md."
            )
        arrays = read_image_folder(folder, size=224, resize=256, limit=IMAGENET_POOL)
        return unit(arrays.images), arrays.labels, arrays.class_names, str(folder)
    if spec.kind == "tinyimagenet":
        folder = expected_path(name, root)
        if not folder.exists():
            raise FileNotFoundError(
                f"{name}: no folder {folder}; the data root was taken from {how}. Download "
                f"{TINY_IMAGENET_FOLDER}.zip by hand and unzip it in {folder.parent} (docs/data.md)."
            )
        # Listed now, decoded when `load` indexes its subset: n images cost n decodes, not 100,000.
        class_names, files, labels = list_tiny_imagenet(folder, split)
        return LazyImages(files, unit), np.asarray(labels, dtype=np.int64), class_names, str(folder)
    return digits(split)


def _subset(total: int, n: int | None, seed: int, name: str) -> np.ndarray:
    if n is None:
        return np.arange(total)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer or None (all samples), got {n!r}.")
    if n > total:
        raise ValueError(
            f"`n` = {n} but {name} has only {total} samples in this split; ask for at most {total}."
        )
    return np.random.default_rng(seed).permutation(total)[:n]


def _check_common(name, split, seed) -> None:
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}.")
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")


def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    flatten: bool = False,
    one_hot: bool = True,
) -> ImageDataset | TextCorpus:
    """Load a dataset from its standard on-disk format, with the paper's preprocessing
    (docs/background.md §6.2), without any network access.

    | name | files under the root | preprocessing |
    |---|---|---|
    | `"mnist"` | `mnist/train-images-idx3-ubyte[.gz]` … (official IDX names) | [0,1], (x − 0.1307)/0.3081 |
    | `"fashion-mnist"` | `fashion-mnist/…` (same names) | [0,1], (x − 0.5)/0.5 |
    | `"cifar10"` | `cifar10/cifar-10-batches-py/data_batch_1` … | [0,1], (x − 0.5)/0.5 per channel |
    | `"cifar100"` | `cifar100/cifar-100-python/train`, `test`, `meta` | as CIFAR-10, 100 fine labels |
    | `"imagenet"` | `imagenet/<split>/<class>/…` | first 1000 in stream order; side 256, crop 224, ImageNet mean/std |
    | `"tinyimagenet"` | `tinyimagenet/tiny-imagenet-200/` ("test": its `val/`) | [0,1], Tiny ImageNet mean/std¹ |
    | `"digits"` | none: the 8×8 digits shipped with pcscale (scikit-learn's `load_digits` set) | [0,1], (x − 0.5)/0.5 |
    | `"tinyshakespeare"` | `tinyshakespeare/input.txt` | characters → ranks in the sorted vocabulary |
    | `"shakespeare-excerpt"` | none: ships with pcscale | as above |

    ¹ Per channel, mean (0.4802, 0.4481, 0.3975) and std (0.2770, 0.2691, 0.2821); labels are
    the ranks of the sorted WordNet ids ([`read_tiny_imagenet`][pcscale.data.read_tiny_imagenet]).

    **Arguments:**

    - `name`: one of the names above.
    - `root`: the data root; default `$PCSCALE_DATA`, else `~/.cache/pcscale/data`.
    - `split`: "train" or "test" (ignored for text).
    - `n`: number of samples, a deterministic subset: the first `n` of a permutation by
      `numpy.random.default_rng(seed)` (ImageNet: `n` of the first 1000 images). Default:
      all (ignored for text).
    - `seed`: the subset's seed.
    - `flatten`: flatten each image channel-major to a vector (for MLPs).
    - `one_hot`: float one-hot targets (default) rather than integer labels.

    **Returns:** an [`ImageDataset`][pcscale.data.ImageDataset], or a
    [`TextCorpus`][pcscale.data.TextCorpus] for text (make sequence batches with
    [`text_batch`][pcscale.data.text_batch]). A missing file raises `FileNotFoundError`
    naming the exact path looked for; see [`load_or_default`][pcscale.data.load_or_default]
    for the documented fallbacks.
    """
    _check_common(name, split, seed)
    base = data_root(root)
    how = describe_root(root)
    if name in TEXT_SETS:
        if TEXT_SETS[name].kind == "bundled-text":
            corpus = _bundled_text()
            return corpus
        path = expected_path(name, base)
        if not path.exists():  # a folder in its place: read_text says so
            raise DatasetMissing(
                f"{name}: no {path}; the data root was taken from {how}. Place the plain-text corpus "
                f"there, or fetch it with pcscale.data.download({name!r}, root)."
            )
        return read_text(path)
    spec = IMAGE_SETS[name]
    images, labels, class_names, source = _read_arrays(name, spec, base, split, how)
    indices = _subset(len(labels), n, seed, name)
    if spec.kind == "folder" and n is not None:
        # docs/background.md §6.2: B of the first 1000 images, without replacement.
        indices = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    images, labels = images[indices], labels[indices]
    x = images
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    x = (x - mean) / std
    if flatten:
        x = x.reshape(len(x), -1)
    # ImageNet targets are always 1000 wide: labels are standard indices (the rank of the
    # synset folder, which is the standard index when all 1000 folders are present).
    classes = max(spec.classes, len(class_names))
    y = np.eye(classes, dtype=np.float32)[labels] if one_hot else labels.copy()
    return ImageDataset(
        x=x, y=y, labels=labels, class_names=tuple(class_names), name=name, source=source, split=split,
        indices=indices,
    )


def _bundled_text() -> TextCorpus:
    resource = resources.files("pcscale.data").joinpath("shakespeare_excerpt.txt")
    with resources.as_file(resource) as path:
        corpus = read_text(path)
    return dataclasses.replace(corpus, path="pcscale (bundled: Hamlet, Open Knowledge Foundation, "
                                            "Open Shakespeare, CC BY 2.5)")


DEFAULTS = {"image": "digits", "text": "shakespeare-excerpt"}


def load_or_default(name: str, **kwargs) -> ImageDataset | TextCorpus:
    """[`load`][pcscale.data.load] `name`, or, when its files are missing, the offline
    default of its kind, with a warning: the bundled 8×8 digits for images (all of them
    if `n` asks for more), the bundled *Hamlet* for text. It falls back only when the
    dataset's folder (or text file) is absent ([`DatasetMissing`][pcscale.data.DatasetMissing]);
    an incomplete folder, a corrupt file or a bad argument is raised, never masked. An
    `ImageDataset` fallback records the dataset asked for in `substitute_for`; check
    `.name` (or `.path` for text) to see which was used.

    **Arguments:** as for `load`.
    """
    data, note = load_with_fallback_note(name, **kwargs)
    if note is not None:
        warnings.warn(note, stacklevel=2)
    return data


def load_with_fallback_note(name: str, **kwargs) -> tuple[ImageDataset | TextCorpus, str | None]:
    """`load_or_default` without the warning: the data and the fallback message (None
    when `name` itself was loaded). Safe to call from several threads at once, unlike
    catching the warning."""
    _check_common(name, kwargs.get("split", "train"), kwargs.get("seed", 0))
    try:
        return load(name, **kwargs), None
    except DatasetMissing as error:
        fallback = DEFAULTS["text" if name in TEXT_SETS else "image"]
        detail = ""
        if fallback == "digits" and kwargs.get("n") is not None:
            available = DIGITS_SIZES[kwargs.get("split", "train")]
            if kwargs["n"] > available:
                detail = f" ({kwargs['n']} samples asked for; it has {available}, so all are used)"
                kwargs = {**kwargs, "n": available}
        data = load(fallback, **kwargs)
        if isinstance(data, ImageDataset):
            data = dataclasses.replace(data, substitute_for=name)
        return data, f"{error} Using the offline default {fallback!r} instead{detail}."


def text_batch(
    corpus: TextCorpus, batch: int, seq_len: int, *, seed: int = 0, one_hot: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's character-level batch (docs/background.md §6.2): with n = len − T − 1 and
    start = `default_rng(seed).integers(0, n − B + 1)`, sequence b starts at start + b
    (consecutive, overlapping windows), x[b, t] = token[start + b + t] and
    y[b, t] = token[start + b + t + 1].

    **Arguments:** `corpus` from [`load`][pcscale.data.load]; `batch` B; `seq_len` T;
    `seed`; `one_hot` (float one-hot targets of shape (B, T, V), default, or int tokens).

    **Returns:** `(x, y)`: int32 tokens (B, T) and the targets.
    """
    if not isinstance(corpus, TextCorpus):
        raise TypeError(f"`corpus` must be a pcscale.data.TextCorpus, got {type(corpus).__name__}.")
    for label, value in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{label}` must be a positive integer, got {value!r}.")
    tokens = corpus.tokens
    n = len(tokens) - seq_len - 1
    if n - batch + 1 < 1:
        raise ValueError(
            f"the corpus has {len(tokens)} characters, too few for {batch} windows of {seq_len} + 1; use a "
            "smaller batch or seq_len, or a longer text."
        )
    start = int(np.random.default_rng(seed).integers(0, n - batch + 1))
    rows = start + np.arange(batch)[:, None] + np.arange(seq_len)[None, :]
    x = tokens[rows].astype(np.int32)
    targets = tokens[rows + 1]
    if one_hot:
        return x, np.eye(len(corpus.vocabulary), dtype=np.float32)[targets]
    return x, targets.astype(np.int32)
