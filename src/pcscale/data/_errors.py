"""Errors shared by the dataset readers: a file that cannot be read, with its cause and fix."""

from __future__ import annotations

import errno
import shlex
from pathlib import Path


def unreadable_error(
    path: Path, error: OSError, label: str, a_file: str, directory_fix: str | None = None
) -> OSError:
    """An error of `error`'s type (so still an `OSError`) naming `path`, the cause and the fix.

    `label` starts the message (e.g. `"IDX"`), `a_file` names what was expected (e.g.
    `"an IDX file"`). A directory gives an `IsADirectoryError` whatever the platform raised,
    with `directory_fix` as its fix when given.
    """
    where = str(path)
    try:
        is_directory = path.is_dir()
    except OSError:
        is_directory = False
    if is_directory or isinstance(error, IsADirectoryError):
        return IsADirectoryError(
            errno.EISDIR,
            f"{label} path {where!r} is a directory, not {a_file}; "
            + (directory_fix or f"point the path at the file inside it, or remove the folder "
               f"and put {a_file} in its place."),
        )
    if isinstance(error, PermissionError):
        message = (
            f"{label} file {where!r} could not be read: permission denied; expected a file this "
            f"user may read. Make it readable (e.g. `chmod u+r {shlex.quote(where)}`) or check "
            "the ownership of the file and of its folders (`ls -l`)."
        )
    else:
        message = (
            f"{label} file {where!r} could not be read ({type(error).__name__}: {error}); "
            f"expected {a_file} that can be opened. Check the path and the disk, or copy the "
            "file again."
        )
    try:
        return type(error)(error.errno, message) if error.errno is not None else type(error)(message)
    except TypeError:  # an OSError subclass with another constructor
        return OSError(error.errno, message)


def read_file_bytes(path: Path, label: str, a_file: str, *, missing: str, inside: str) -> bytes:
    """The bytes of `path`, or an error naming it, the cause and the fix: a
    `FileNotFoundError` ending in `missing` (what was expected and where to look) when
    there is no such file; otherwise `unreadable_error`'s, where a folder in the file's
    place gets the fix of moving `inside` (the file as it might lie in that folder) up."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{label} file {str(path)!r} does not exist; {missing}") from None
    except OSError as error:  # a directory, permission denied, an I/O error
        kind = a_file.split(" ", 1)[1]  # "an IDX file" → "IDX file"
        raise unreadable_error(
            path, error, label, a_file,
            directory_fix=f"put the {kind} in the folder's place (if it is inside it, e.g. "
            f"{str(path / inside)!r}, move it up), or point `path` at the {kind} inside it; "
            "otherwise remove the folder.",
        ) from error
