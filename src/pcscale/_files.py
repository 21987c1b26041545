"""Atomic file writes for everything pcscale saves (results, figures, downloads): a
temporary file in the target folder, renamed into place only when complete. Not part of
the numerical core, which does no file I/O."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: os.umask can only be read by setting it, which is process-wide
# and would race with writes from other threads (cells run one per device in threads).
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, prefix: str = ".partial-") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it is renamed to `path`
    (creating the folder), with the permissions the umask gives new files (mkstemp would
    leave 0600, unreadable on a shared data root). On any exception, including
    KeyboardInterrupt, the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix="-" + path.name)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno is None or error.filename is not None:
            raise
        # A failed write (e.g. a full disk) names no file: name the one being written.
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
