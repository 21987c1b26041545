"""Reader for the official python-pickle versions of CIFAR-10 and CIFAR-100 (numpy only)."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import unreadable_error
from ._safe_pickle import CifarUnpickler, RefusedGlobal, not_official, realise

_SPLITS = ("train", "test")
_PIXELS = 3 * 32 * 32

# classes -> (files of each split, meta file, labels key, label-names key)
_LAYOUTS = {
    10: (
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    100: ({"train": ("train",), "test": ("test",)}, "meta", b"fine_labels", b"fine_label_names"),
}


@dataclass(frozen=True)
class ImageArrays:
    """A set of images with integer labels, as read from disk.

    - `images`: `uint8` array of shape `(N, 3, H, W)` (channel-major, RGB).
    - `labels`: `int64` array of shape `(N,)`, each in `[0, len(class_names))`.
    - `class_names`: the name of each class, indexed by label.
    - `files`: the files the images were read from, in the order they were read.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    files: tuple[str, ...]


def read_cifar(folder: str | Path, split: str, *, classes: int = 10) -> ImageArrays:
    """Read one split of CIFAR-10 or CIFAR-100 from the official python-pickle files.

    CIFAR-10: `data_batch_1` … `data_batch_5` (train), `test_batch` (test) and
    `batches.meta`. CIFAR-100: `train`, `test` and `meta`, with the 100 fine labels.
    Each batch stores `N×3072` bytes per image: 1024 red, 1024 green, then 1024 blue
    values, each plane a row-major 32×32 image, so pixel `(c, i, j)` of image `n` is
    `data[n, 1024·c + 32·i + j]`.

    **Arguments:**

    - `folder`: the directory holding the batch files, e.g.
      `<root>/cifar10/cifar-10-batches-py` or `<root>/cifar100/cifar-100-python`.
    - `split`: `"train"` or `"test"`.
    - `classes`: `10` for CIFAR-10 or `100` for CIFAR-100.

    **Returns:**

    An [`ImageArrays`][pcscale.data.ImageArrays] with `uint8` images of shape
    `(N, 3, 32, 32)`, `int64` labels of shape `(N,)`, the class names from the meta file
    and the batch files read.

    **Raises:**

    `ValueError` for a bad `split` or `classes`, or a file that is not a valid CIFAR
    pickle — including one that refers to any Python global beyond NumPy's array
    reconstruction, which is refused unread, since unpickling it could run code, and one
    holding an array that is not plain numbers (object, string, structured or sub-array
    dtypes), or whose bytes do not fill its shape: NumPy is never handed the file's
    arrays, which are rebuilt from their bytes with `np.frombuffer` alone;
    `FileNotFoundError` when the folder or any expected file is missing;
    `IsADirectoryError` when a directory stands where a file should be, and
    `PermissionError` (or another `OSError`) when a file cannot be read.
    """
    if split not in _SPLITS:
        raise ValueError(f"split={split!r} is not valid; expected one of {_SPLITS}.")
    if classes not in _LAYOUTS:
        raise ValueError(
            f"classes={classes!r} is not valid; expected 10 (CIFAR-10) or 100 (CIFAR-100)."
        )
    split_files, meta_file, labels_key, names_key = _LAYOUTS[classes]
    folder = Path(folder)
    paths = [folder / name for name in (*split_files[split], meta_file)]
    _check_files_exist(folder, paths, classes)
    class_names = _read_class_names(paths[-1], names_key, classes)
    batches = [_read_batch(path, labels_key, classes) for path in paths[:-1]]
    return ImageArrays(
        images=np.concatenate([images for images, _ in batches]),
        labels=np.concatenate([labels for _, labels in batches]),
        class_names=class_names,
        files=tuple(str(path) for path in paths[:-1]),
    )


def _check_files_exist(folder: Path, paths: list[Path], classes: int) -> None:
    # Only absent files count as missing: a directory or an unreadable file in a file's
    # place is reported, with its cause and fix, when it is opened.
    missing = [str(path) for path in paths if _absent(path)]
    if not missing:
        return
    official = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    if _absent(folder):
        found = "the folder does not exist"
    elif not folder.is_dir():
        found = "it is a file, not a folder"
    else:
        found = f"missing: {missing}"
    raise FileNotFoundError(
        f"CIFAR-{classes} folder {str(folder)!r} is incomplete ({found}); expected the files "
        f"{[str(path) for path in paths]}. Point `folder` at the extracted '{official}' "
        f"directory of the official python version of CIFAR-{classes}."
    )


def _absent(path: Path) -> bool:
    """Whether `path` does not exist; False when it cannot be told (e.g. permission denied),
    so that opening it reports the real cause."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _load_pickle(path: Path) -> dict[Any, Any]:
    try:
        file = path.open("rb")
    except OSError as error:
        raise _unreadable_batch(path, error) from error
    with file:
        try:
            content = CifarUnpickler(file, encoding="bytes").load()
        except RefusedGlobal as error:
            raise ValueError(
                f"CIFAR file {str(path)!r} refers to the Python global {error.qualified!r}, which "
                "no official CIFAR batch needs: the file is not an official CIFAR batch and was "
                "not loaded, for safety (unpickling it could run code). Extract the official "
                "archive again."
            ) from None
        except OSError as error:  # reading failed (an I/O error), not the pickle
            raise _unreadable_batch(path, error) from error
        except Exception as error:  # pickle raises many types on corrupt input
            raise ValueError(
                f"CIFAR file {str(path)!r} could not be unpickled ({type(error).__name__}: "
                f"{error}); expected a complete python pickle from the official CIFAR archive. "
                "The file is truncated or corrupt: extract the archive again."
            ) from error
    try:
        content = realise(content, path)
    except RecursionError:
        raise not_official(path, "nests its containers too deeply") from None
    if not isinstance(content, dict):
        raise ValueError(
            f"CIFAR file {str(path)!r} holds a {type(content).__name__}; expected a dict with "
            "bytes keys. Extract the official python version of the archive again."
        )
    return content


def _unreadable_batch(path: Path, error: OSError) -> OSError:
    return unreadable_error(
        path, error, "CIFAR", "a CIFAR batch file",
        directory_fix="remove that folder and extract the official archive again.",
    )


def _get(content: dict[Any, Any], key: bytes, path: Path) -> Any:
    if key not in content:
        raise ValueError(
            f"CIFAR file {str(path)!r} has no key {key!r}; found keys "
            f"{sorted(map(repr, content))}. Expected the official python version of the "
            "dataset (for CIFAR-100 pass classes=100)."
        )
    return content[key]


def _read_class_names(path: Path, names_key: bytes, classes: int) -> tuple[str, ...]:
    names = _get(_load_pickle(path), names_key, path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, (bytes, str)) for name in names):
        raise ValueError(
            f"CIFAR meta file {str(path)!r} holds {reprlib.repr(names)} under {names_key!r}; "
            "expected a list of class names. Extract the official archive again."
        )
    if len(names) != classes:
        raise ValueError(
            f"CIFAR meta file {str(path)!r} lists {len(names)} class names; expected "
            f"{classes}. Check that `classes` matches the dataset (10 or 100)."
        )
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names)


def _read_batch(path: Path, labels_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _load_pickle(path)
    data = _as_array(_get(content, b"data", path), path, "data")
    labels = _as_array(_get(content, labels_key, path), path, "labels")
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(
            f"CIFAR file {str(path)!r} holds labels of dtype {labels.dtype}; expected integers. "
            "Extract the official archive again."
        )
    labels = labels.astype(np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ValueError(
            f"CIFAR file {str(path)!r} holds data of shape {data.shape} and dtype {data.dtype}; "
            f"expected uint8 of shape (N, {_PIXELS}). Extract the official archive again."
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR file {str(path)!r} holds {labels.size} labels for {data.shape[0]} images; "
            "expected one label per image. Extract the official archive again."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"CIFAR file {str(path)!r} holds labels in [{labels.min()}, {labels.max()}]; "
            f"expected labels in [0, {classes}). Check that `classes` matches the dataset."
        )
    return data.reshape(-1, 3, 32, 32), labels


def _as_array(value: Any, path: Path, what: str) -> np.ndarray:
    """`np.asarray(value)`, with a `ValueError` naming the file when `value` (e.g. a ragged
    list) makes no array."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(
            f"CIFAR file {str(path)!r} holds {what} that make no array ({type(error).__name__}: "
            f"{error}); expected a NumPy array or a list of numbers. Extract the official "
            "archive again."
        ) from error
