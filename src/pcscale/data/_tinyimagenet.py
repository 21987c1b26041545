"""Reader for Tiny ImageNet in its official folder layout, `tiny-imagenet-200/` (Pillow, optional)."""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._cifar import ImageArrays
from ._errors import unreadable_error
from ._folder import IMAGE_SUFFIXES, _entries, _import_pillow, _unlistable, decode_rgb

SIDE = 64  # every Tiny ImageNet image is 64 × 64 pixels
SPLIT_FOLDERS = {"train": "train", "test": "val"}  # the official test/ folder has no labels
_GET_IT = (
    "Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) and unzip it, "
    "keeping its folders as they are"
)


def read_tiny_imagenet(folder: str | Path, split: str) -> ImageArrays:
    """Read one split of Tiny ImageNet from the official, unzipped `tiny-imagenet-200/` folder.

    The layout read is the official archive's: `wnids.txt` (the 200 WordNet ids, one a
    line), `words.txt` (`wnid<TAB>words`, optional), `train/<wnid>/images/<wnid>_<k>.JPEG`
    (500 a class; the `<wnid>_boxes.txt` beside them is ignored) and `val/images/val_<k>.JPEG`
    with their labels in `val/val_annotations.txt` (file name, wnid, then four box
    coordinates, tab-separated).

    - Splits: `"train"` reads `train/`; `"test"` reads the official **validation** set,
      `val/`, the labelled held-out set. The official `test/` folder has no labels and
      is not read.
    - Labels: the rank of the image's wnid among the **sorted** wnids of `wnids.txt`
      (so label 0 is the alphabetically first wnid, whatever the file's line order; the
      order most loaders use, e.g. a folder-of-classes reader on `train/`).
    - Class names: a wnid's words in `words.txt` (e.g. `"goldfish, Carassius auratus"`),
      or the wnid itself where `words.txt` is missing or lacks it.
    - Stream order: `train` by sorted wnid, then by file name; `test` by file name.
    - Images are converted to RGB (a few official images are greyscale) and must then be
      64 × 64.

    Needs Pillow: `pip install 'pcscale[images]'`.

    **Arguments:**

    - `folder`: the `tiny-imagenet-200` folder (the one holding `wnids.txt`).
    - `split`: `"train"` or `"test"` (the official validation set).

    **Returns:**

    An [`ImageArrays`][pcscale.data.ImageArrays] with `uint8` images of shape
    `(N, 3, 64, 64)`, `int64` labels in `[0, 200)` (for the official set), the class
    names in label order and the image files read, in stream order.

    **Raises:**

    `ImportError` without Pillow; `ValueError` for a bad `split`, an empty or repeated
    `wnids.txt` entry, a malformed or repeated annotation line, an annotation naming a wnid
    absent from `wnids.txt`, an image Pillow cannot decode or one that is not 64 × 64;
    `FileNotFoundError` when the folder, `wnids.txt`, the split's folder, the annotations, a
    class's images or an annotated image are missing; `NotADirectoryError` when `folder`
    is a file; `PermissionError` (or another `OSError`) when a file or folder cannot be read.
    """
    image_module = _import_pillow()
    class_names, files, labels = list_tiny_imagenet(folder, split)
    return ImageArrays(
        images=decode_tiny_imagenet(files, image_module),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        files=tuple(str(path) for path in files),
    )


def list_tiny_imagenet(folder: str | Path, split: str) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """The class names, and every image file of `split` with its label, in stream order;
    nothing is decoded."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(
            f"split={split!r} is not valid; expected 'train' or 'test' ('test' reads the official "
            "validation set, val/; the official test set has no labels)."
        )
    folder = Path(folder)
    _check_folder(folder)
    wnids = _read_wnids(folder / "wnids.txt")
    words = _read_words(folder / "words.txt")
    class_names = tuple(words.get(wnid, wnid) for wnid in wnids)
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    if split == "train":
        files: list[Path] = []
        labels: list[int] = []
        for wnid in wnids:
            class_files = _class_images(folder / "train" / wnid / "images")
            files.extend(class_files)
            labels.extend([label_of[wnid]] * len(class_files))
        return class_names, files, labels
    annotated = _read_annotations(folder / "val" / "val_annotations.txt", label_of)
    names = sorted(annotated)
    return class_names, [folder / "val" / "images" / name for name in names], [annotated[n] for n in names]


def decode_tiny_imagenet(files: Sequence[Path], image_module=None) -> np.ndarray:
    """Decode `files` to `uint8` RGB images of shape `(len(files), 3, 64, 64)`."""
    image_module = image_module or _import_pillow()
    images = np.empty((len(files), 3, SIDE, SIDE), dtype=np.uint8)
    for index, path in enumerate(files):
        images[index] = _decode(image_module, path)
    return images


class LazyImages:
    """The images of a list of files, decoded only when indexed: `lazy[indices]` decodes
    the files at `indices` (an integer array) and returns `transform` of the `uint8` batch.
    `load` uses it so that a subset of Tiny ImageNet decodes that subset only."""

    def __init__(self, files: Sequence[Path], transform: Callable[[np.ndarray], np.ndarray]):
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices) -> np.ndarray:
        chosen = [self.files[int(index)] for index in np.asarray(indices).reshape(-1)]
        return self.transform(decode_tiny_imagenet(chosen))


def _check_folder(folder: Path) -> None:
    try:
        is_folder = stat.S_ISDIR(folder.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"Tiny ImageNet folder {str(folder)!r} does not exist; expected the unzipped official "
            f"folder tiny-imagenet-200, holding wnids.txt, train/ and val/. {_GET_IT}, then point "
            "`folder` at tiny-imagenet-200."
        ) from None
    except OSError as error:
        raise _unlistable(folder, error) from error
    if not is_folder:
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"Tiny ImageNet folder {str(folder)!r} is a file, not a folder; expected the unzipped "
            f"official folder tiny-imagenet-200. {_GET_IT} (do not point at the zip file itself).",
        )


def _read_lines(path: Path, what: str, optional: bool = False) -> list[str] | None:
    """The lines of a small text file of the layout; None when `optional` and it is absent."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        if optional:
            return None
        raise FileNotFoundError(
            f"Tiny ImageNet file {str(path)!r} does not exist; expected {what} there. {_GET_IT}, "
            "or check that the folder is tiny-imagenet-200 itself."
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Tiny ImageNet file {str(path)!r} is not UTF-8 text ({error}); expected {what}. Replace it "
            "with the file from the official archive."
        ) from None
    except OSError as error:
        raise unreadable_error(path, error, "Tiny ImageNet", "a text file") from error


def _read_wnids(path: Path) -> list[str]:
    """The sorted WordNet ids of `wnids.txt`: the label order."""
    wnids = [line.strip() for line in _read_lines(path, "the class list, one WordNet id a line") or []]
    wnids = [wnid for wnid in wnids if wnid]
    if not wnids or len(set(wnids)) != len(wnids):
        problem = "lists no WordNet id" if not wnids else "lists a WordNet id twice"
        raise ValueError(
            f"Tiny ImageNet file {str(path)!r} {problem}; expected distinct WordNet ids, one a line "
            "(200 in the official file). Replace it with the file from the official archive."
        )
    return sorted(wnids)


def _read_words(path: Path) -> dict[str, str]:
    """wnid → its words, from `words.txt` (empty when the file is absent)."""
    words = {}
    for line in _read_lines(path, "WordNet ids and their words", optional=True) or []:
        wnid, _, text = line.partition("\t")
        if wnid.strip() and text.strip():
            words[wnid.strip()] = text.strip()
    return words


def _read_annotations(path: Path, label_of: dict[str, int]) -> dict[str, int]:
    """Image file name → label, from `val/val_annotations.txt`."""
    what = "the validation labels, one 'file<TAB>wnid<TAB>box' line per image"
    annotated: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path, what) or [], start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        name, wnid = (fields[0].strip(), fields[1].strip()) if len(fields) >= 2 else ("", "")
        if not name or not wnid or Path(name).name != name or name in annotated:
            problem = "names an image twice" if name in annotated else "is not 'file<TAB>wnid<TAB>box'"
            raise ValueError(
                f"Tiny ImageNet annotations {str(path)!r}, line {number} ({line!r}), {problem}; expected "
                f"{what}. Replace the file with the one from the official archive."
            )
        if wnid not in label_of:
            raise ValueError(
                f"Tiny ImageNet annotations {str(path)!r}, line {number}, label {name!r} with WordNet id "
                f"{wnid!r}, which wnids.txt does not list; expected one of its {len(label_of)} ids. Use the "
                "wnids.txt and val/ of the same official archive."
            )
        annotated[name] = label_of[wnid]
    return annotated


def _class_images(images_folder: Path) -> list[Path]:
    if not images_folder.is_dir():
        raise FileNotFoundError(
            f"Tiny ImageNet class folder {str(images_folder)!r} does not exist; expected one "
            f"train/<wnid>/images folder for every WordNet id in wnids.txt. {_GET_IT}."
        )
    files = _entries(images_folder, lambda entry: entry.is_file() and not entry.name.startswith(".")
                     and entry.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"Tiny ImageNet class folder {str(images_folder)!r} holds no images; expected "
            f"<wnid>_<k>.JPEG files (500 in the official set). {_GET_IT}."
        )
    return files


def _decode(image_module, path: Path) -> np.ndarray:
    """One image file as `uint8` RGB, channel-major, checked to be 64 × 64."""
    try:
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"Tiny ImageNet image {str(path)!r} does not exist; expected every image of the split (the "
            f"class folders' files, or each file val_annotations.txt names). {_GET_IT}."
        ) from None
    except OSError as error:
        raise unreadable_error(path, error, "Image", "an image file") from error
    rgb = decode_rgb(image_module, file, path,
                     "expected a JPEG Pillow can decode. Replace it with the file from the official archive")
    if rgb.size != (SIDE, SIDE):
        width, height = rgb.size
        raise ValueError(
            f"Image {str(path)!r} is {width}×{height} pixels after conversion to RGB; expected "
            f"{SIDE}×{SIDE}, Tiny ImageNet's size. Replace it with the file from the official archive."
        )
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
