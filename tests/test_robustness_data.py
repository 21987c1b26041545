"""Archive unpacking in `pcscale.data.download` refuses entries that would write outside
its folder: links (symbolic or hard), absolute names and `..` paths. Each test builds a
small hostile archive and checks that nothing at all is unpacked, inside or outside."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pcscale.data import _download

TOP = "cifar-10-batches-py"


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        top = tarfile.TarInfo(TOP)
        top.type = tarfile.DIRTYPE
        top.mode = 0o755
        tar.addfile(top)
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _unpack_refused(tmp_path: Path, archive: Path, entry: str, kind: str) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    with pytest.raises(ValueError) as info:
        _download._unpack(archive, folder, TOP)
    message = str(info.value)
    assert str(archive) in message and f"unsafe entry {entry!r} ({kind})" in message
    assert "delete it and download again" in message
    assert list(folder.iterdir()) == []  # not even the safe entries, nor the staging folder


def test_symbolic_link_entries_are_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    archive = _archive(
        tmp_path / "evil.tar.gz",
        (_link(f"{TOP}/data_batch_1", str(outside), tarfile.SYMTYPE), None),
        (_file(f"{TOP}/data_batch_1"), b"written through the link"),
    )
    _unpack_refused(tmp_path, archive, f"{TOP}/data_batch_1", "a link")
    assert not outside.exists()


def test_hard_link_entries_are_refused(tmp_path):
    archive = _archive(
        tmp_path / "evil.tar.gz",
        (_file(f"{TOP}/batches.meta"), b"meta"),
        (_link(f"{TOP}/test_batch", f"{TOP}/batches.meta", tarfile.LNKTYPE), None),
    )
    _unpack_refused(tmp_path, archive, f"{TOP}/test_batch", "a link")


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_entries_outside_the_folder_are_refused(tmp_path, where):
    outside = tmp_path / "escaped.txt"
    name = str(outside) if where == "absolute" else f"{TOP}/../../escaped.txt"
    archive = _archive(tmp_path / "evil.tar.gz", (_file(name), b"escaped"))
    _unpack_refused(tmp_path, archive, name, "a path outside the folder it unpacks into")
    assert not outside.exists()


def test_a_safe_archive_still_unpacks(tmp_path):
    archive = _archive(tmp_path / "good.tar.gz", (_file(f"{TOP}/batches.meta"), b"meta"))
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _download._unpack(archive, folder, TOP)
    assert (folder / TOP / "batches.meta").read_bytes() == b"meta"
    assert sorted(p.name for p in folder.iterdir()) == [TOP]
