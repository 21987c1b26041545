"""`download`: fetch the public datasets once, for users who are online. Nothing calls it
implicitly; offline it fails fast and says which files to place where."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .._files import atomic_path
from ._load import CIFAR_FOLDERS, IMAGE_SETS, TEXT_SETS, TINY_IMAGENET_FOLDER
from ._root import data_root

_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")


@dataclasses.dataclass(frozen=True)
class Remote:
    """One public file: where it is, its MD5 as published by the dataset's authors (None
    where none is published, then its size in bytes is checked), and whether it is a
    .tar.gz archive to unpack."""

    url: str
    filename: str
    md5: str | None
    size: int | None = None
    archive: bool = False


REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": tuple(
        Remote(_MNIST + f, f, md5) for f, md5 in zip(_IDX, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"), strict=True)
    ),
    "fashion-mnist": tuple(
        Remote(_FASHION + f, f, md5) for f, md5 in zip(_IDX, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"), strict=True)
    ),
    "cifar10": (Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", archive=True),),
    "cifar100": (Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", archive=True),),
    # No checksum is published for tiny-shakespeare; its size identifies it.
    "tinyshakespeare": (Remote("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                               "input.txt", None, size=1115394),),
}
"""The public files [`download`][pcscale.data.download] fetches, by dataset name ("mnist",
"fashion-mnist", "cifar10", "cifar100", "tinyshakespeare"): for each file its URL, its
file name, its published MD5 (None where none is published; its size is checked instead)
and whether it is a .tar.gz archive to unpack."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a file identity, as published, not security
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, remote: Remote) -> bool:
    if not path.is_file():
        return False
    if remote.md5 is not None:
        return _md5(path) == remote.md5
    return path.stat().st_size == remote.size


def _targets(name: str, folder: Path) -> list[Path]:
    if name in CIFAR_FOLDERS:
        return [folder / CIFAR_FOLDERS[name]]
    return [folder / remote.filename for remote in REMOTES[name]]


def _fetch(remote: Remote, folder: Path, name: str, timeout: float) -> Path:
    """Download into a temporary file in `folder`, verify, then rename into place."""
    final = folder / remote.filename
    with atomic_path(final) as temporary:
        try:
            with urllib.request.urlopen(remote.url, timeout=timeout) as response, open(temporary, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as error:
            places = ", ".join(str(p) for p in _targets(name, folder))
            raise ConnectionError(
                f"could not fetch {remote.url} ({error}). If this machine is offline, copy the official "
                f"files there by hand: {places} (see docs/data.md)."
            ) from None
        if not _verified(temporary, remote):
            found = _md5(temporary) if remote.md5 else f"{temporary.stat().st_size} bytes"
            expected = remote.md5 or f"{remote.size} bytes"
            raise ValueError(
                f"{remote.url} arrived corrupt or changed upstream: got {found}, expected {expected}; nothing "
                "was kept. Try again, or place the official file by hand."
            )
    return final


def _safe_members(archive: tarfile.TarFile, path: Path, archive_path: Path):
    """The archive's entries, each checked to unpack inside `path`: a link (symbolic or
    hard) or a name that leads outside `path` refuses the whole archive."""
    for member in archive.getmembers():
        target = (path / member.name).resolve()
        if not str(target).startswith(str(path.resolve()) + os.sep) or member.issym() or member.islnk():
            kind = "a link" if member.issym() or member.islnk() else "a path outside the folder it unpacks into"
            raise ValueError(
                f"{archive_path}: the archive holds an unsafe entry {member.name!r} ({kind}); refusing to "
                "unpack it, and nothing was unpacked. It is not the official archive: delete it and "
                "download again."
            )
        yield member


def _unpack(archive_path: Path, folder: Path, expected: str) -> None:
    """Unpack into a temporary folder beside the target, then rename the expected top
    folder into place: a failure leaves nothing half-unpacked."""
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".unpacking-"))
    try:
        try:
            with tarfile.open(archive_path, "r:gz") as archive:
                members = list(_safe_members(archive, staging, archive_path))
                if hasattr(tarfile, "data_filter"):  # also refuses devices, FIFOs, odd modes
                    archive.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    archive.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"{archive_path} could not be unpacked ({error}); delete it and download again.") from None
        source = staging / expected
        if not source.is_dir():
            raise ValueError(f"{archive_path} does not hold the folder {expected!r}; it is not the official archive.")
        target = folder / expected
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(name: str, root: str | os.PathLike | None = None, *, timeout: float = 20.0) -> Path:
    """Fetch a public dataset's official files into `<root>/<name>/`, verify them against
    their published checksums (MD5; the size for tiny-shakespeare, which has none) and
    unpack archives atomically. Files already present and valid are not fetched again.
    Nothing in pcscale calls this implicitly.

    Offline, the first connection fails (within `timeout` seconds once the host name
    resolves) with a `ConnectionError` that lists the files to place by hand; an official
    archive copied into the dataset folder by hand is verified and unpacked instead. A
    failed or corrupt download leaves no partial file, no half-unpacked folder and no
    empty dataset folder (the root itself may have been created); files verified earlier
    in the same call are kept. ImageNet is gated and cannot be downloaded, Tiny ImageNet
    is fetched and unzipped by hand (the error says where); the bundled defaults
    ("digits", "shakespeare-excerpt") need no download.

    **Arguments:** `name` ("mnist", "fashion-mnist", "cifar10", "cifar100",
    "tinyshakespeare"); `root` as for [`load`][pcscale.data.load]; `timeout` in seconds.

    **Returns:** the dataset's folder.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a dataset name, got {name!r}; e.g. download('mnist', root).")
    if name not in REMOTES:
        if name in IMAGE_SETS or name in TEXT_SETS:
            why = {
                "imagenet": "ImageNet is gated: request it from image-net.org and prepare a folder of class "
                            "subfolders under <root>/imagenet/train (docs/data.md)",
                # A zip with no published checksum: fetched by hand, so that its source is the user's choice.
                "tinyimagenet": f"download {TINY_IMAGENET_FOLDER}.zip by hand (the official copy is "
                                f"http://cs231n.stanford.edu/{TINY_IMAGENET_FOLDER}.zip) and unzip it under "
                                f"{data_root(root) / 'tinyimagenet'}, so that "
                                f"{data_root(root) / 'tinyimagenet' / TINY_IMAGENET_FOLDER / 'wnids.txt'} exists "
                                "(docs/data.md)",
            }.get(name, f"{name!r} ships with pcscale and needs no download")
            raise ValueError(f"cannot download {name!r}: {why}.")
        raise ValueError(f"unknown dataset {name!r}; downloadable: {sorted(REMOTES)}.")
    folder = data_root(root) / (IMAGE_SETS.get(name) or TEXT_SETS[name]).folder
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for remote in REMOTES[name]:
            if remote.archive:
                expected = CIFAR_FOLDERS[name]
                if (folder / expected).is_dir():
                    continue
                # An official archive copied here by hand is verified and unpacked, not fetched,
                # and is kept; a fetched one is removed once unpacked.
                archive = folder / remote.filename
                fetched = not _verified(archive, remote)
                if fetched:
                    archive = _fetch(remote, folder, name, timeout)
                try:
                    _unpack(archive, folder, expected)
                finally:
                    if fetched:
                        archive.unlink(missing_ok=True)
            elif not _verified(folder / remote.filename, remote):
                _fetch(remote, folder, name, timeout)
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return folder
