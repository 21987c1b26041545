"""Where datasets live: the argument, then $PCSCALE_DATA, then a per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "PCSCALE_DATA"
"""The environment variable naming the data root when no `root` is given ("PCSCALE_DATA")."""


def default_cache() -> Path:
    """`$XDG_CACHE_HOME/pcscale/data`, or `~/.cache/pcscale/data`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pcscale" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else the `PCSCALE_DATA` environment variable, else
    [`default_cache`][pcscale.data.default_cache]. The folder need not exist yet."""
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"`root` must be a path, got {type(root).__name__}; pass e.g. root='~/data'.")
        if not os.fspath(root):
            raise ValueError("`root` is an empty path (the working directory is never used); pass a folder.")
        return Path(root).expanduser()
    from_env = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_env:
        return Path(from_env).expanduser()
    return default_cache()


def describe_root(root: str | os.PathLike | None) -> str:
    """How the root was chosen, for error messages."""
    if root is not None:
        return "the `root` argument"
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return f"${ENVIRONMENT_VARIABLE}"
    return f"the default cache (set ${ENVIRONMENT_VARIABLE} or pass root= to use another folder)"
