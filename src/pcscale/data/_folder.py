"""Reader for an ImageNet-style folder of class subfolders of images (Pillow, optional)."""

from __future__ import annotations

import errno
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._cifar import ImageArrays
from ._errors import unreadable_error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def read_image_folder(
    root: str | Path, *, size: int = 224, resize: int = 256, limit: int | None = None
) -> ImageArrays:
    """Read an ImageNet-style folder: one subfolder per class, each holding images.

    The classes are the sorted subfolder names (hidden folders, starting with `.`, are
    skipped) and an image's label is its class's index. Images are the files with a suffix
    in `.jpg .jpeg .png .bmp .gif .webp` (any case), sorted by name within each class and
    taken class by class: this is the *stream order*, and `limit` keeps its first images.

    Each image is converted to RGB, resized (bilinear, aspect ratio kept) so that its
    shorter side is `resize` — the longer side becomes `int(resize · long / short)`, as in
    torchvision — and centre-cropped to `size × size`, with the crop's top-left corner at
    `round((resized − size) / 2)` on each axis.

    Needs Pillow: `pip install 'pcscale[images]'`.

    **Arguments:**

    - `root`: the folder of class subfolders.
    - `size`: side of the square centre crop, in pixels.
    - `resize`: length of the shorter side after resizing, in pixels; at least `size`.
    - `limit`: read at most this many images (the first in stream order); `None` reads all.

    **Returns:**

    An [`ImageArrays`][pcscale.data.ImageArrays] with `uint8` images of shape
    `(N, 3, size, size)`, `int64` labels, the class names (all classes, even those that
    `limit` cut off) and the image files read.

    **Raises:**

    `ImportError` without Pillow; `FileNotFoundError` when `root` is missing, has no
    class subfolders, or a class subfolder has no images; `NotADirectoryError` when `root`
    is a file; `PermissionError` (or another `OSError`) when a folder cannot be listed or
    an image file cannot be opened; `ValueError` for bad sizes or an image Pillow cannot
    decode.
    """
    image_module = _import_pillow()
    _check_sizes(size, resize, limit)
    root = Path(root)
    class_names, files, labels = _list_images(root)
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for n, path in enumerate(files):
        images[n] = _load_image(image_module, path, size, resize)
    return ImageArrays(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        files=tuple(str(path) for path in files),
    )


def _import_pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "Reading an image folder needs Pillow, which is not installed; expected the "
            "optional image extra. Install it with: pip install 'pcscale[images]' "
            "(or pip install pillow)."
        ) from error
    return Image


def _check_sizes(size: int, resize: int, limit: int | None) -> None:
    for name, value in (("size", size), ("resize", resize)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid; expected a positive integer.")
    if size > resize:
        raise ValueError(
            f"size={size} is larger than resize={resize}; expected size <= resize, because the "
            "centre crop is taken from an image whose shorter side is `resize`. Lower `size` "
            "or raise `resize`."
        )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is not valid; expected None or a positive integer.")


def _list_images(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Return the class names, and every image file with its label, in stream order."""
    try:
        is_folder = stat.S_ISDIR(root.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"Image folder {str(root)!r} does not exist; expected a folder of class "
            "subfolders of images (ImageNet layout, e.g. 'train/n01440764/*.JPEG'). Check the "
            "path."
        ) from None
    except OSError as error:
        raise _unlistable(root, error) from error
    if not is_folder:
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"Image folder {str(root)!r} is a file, not a folder; expected a folder of class "
            "subfolders of images (ImageNet layout, e.g. 'train/n01440764/*.JPEG'). Point "
            "`root` at the folder above the class folders.",
        )
    class_dirs = _entries(root, lambda entry: entry.is_dir() and not entry.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(
            f"Image folder {str(root)!r} has no class subfolders; expected one subfolder per "
            "class, each holding that class's images. Check that `root` is the folder above "
            "the class folders."
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        class_files = _class_images(class_dir)
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    return tuple(entry.name for entry in class_dirs), files, labels


def _class_images(class_dir: Path) -> list[Path]:
    class_files = _entries(
        class_dir,
        lambda entry: entry.is_file() and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_SUFFIXES,
    )
    if not class_files:
        raise FileNotFoundError(
            f"Class folder {str(class_dir)!r} holds no images; expected at least one file "
            f"with a suffix in {IMAGE_SUFFIXES} (any case). Add images or remove the folder."
        )
    return class_files


def _entries(folder: Path, keep: Callable[[Path], bool]) -> list[Path]:
    """The entries of `folder` that `keep` admits, sorted by name; an error naming the
    folder, the cause and the fix when it cannot be listed."""
    try:
        return sorted((entry for entry in folder.iterdir() if keep(entry)), key=lambda e: e.name)
    except OSError as error:
        raise _unlistable(folder, error) from error


def _unlistable(folder: Path, error: OSError) -> OSError:
    if isinstance(error, PermissionError):
        return PermissionError(
            error.errno,
            f"Image folder {str(folder)!r} could not be listed: permission denied; expected a "
            "folder this user may read. Make it readable (e.g. "
            f"`chmod u+rx {shlex.quote(str(folder))}`) or check the ownership of it and of "
            "its parent folders (`ls -ld`).",
        )
    return OSError(
        error.errno,
        f"Image folder {str(folder)!r} could not be listed ({type(error).__name__}: {error}); "
        "expected a readable folder of images. Check the path and the disk.",
    )


def decode_rgb(image_module, file, path: Path, expected: str):
    """Decode the open image `file` (read from `path`, closed here) to an RGB Pillow image;
    an undecodable file is a ValueError naming the path, Pillow's reason and `expected`."""
    try:
        with file, image_module.open(file) as image:
            return image.convert("RGB")
    except Exception as error:  # Pillow raises several types for unreadable files
        raise ValueError(
            f"Image {str(path)!r} could not be read ({type(error).__name__}: {error}); {expected}."
        ) from error


def _load_image(image_module, path: Path, size: int, resize: int) -> np.ndarray:
    """Open, resize the shorter side to `resize`, centre-crop `size`; return uint8 CHW."""
    try:  # opened here, so that a file the system will not open is not called undecodable
        file = path.open("rb")
    except OSError as error:
        raise unreadable_error(path, error, "Image", "an image file") from error
    rgb = decode_rgb(image_module, file, path, "expected an image Pillow can decode. Replace or remove the file")
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    scaled_long = int(resize * long / short)
    new_size = (resize, scaled_long) if width <= height else (scaled_long, resize)
    resized = rgb.resize(new_size, resample=image_module.BILINEAR)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    cropped = resized.crop((left, top, left + size, top + size))
    return np.asarray(cropped, dtype=np.uint8).transpose(2, 0, 1)
