"""Atomic file writes for everything pcscale saves (results, figures, downloads): a
temporary file in the target folder, renamed into place only when complete. Not part of
the numerical core, which does no file I/O."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
