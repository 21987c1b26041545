"""The one plotting style every pcscale figure shares."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from .._files import atomic_path

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType


def pyplot():
    """matplotlib.pyplot with a non-interactive backend unless one was chosen, or a
    clear error when the `plot` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib; install it with pip install 'pcscale[plot]'."
        ) from None
    # Headless machines (clusters, CI) fall back to Agg; a chosen backend (MPLBACKEND,
    # Jupyter's inline backend, a desktop with a display) is left alone.
    backend = matplotlib.get_backend().lower()
    interactive_gui = backend in ("tkagg", "qtagg", "qt5agg", "gtk3agg", "gtk4agg", "wxagg")
    headless = (
        sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    )
    if "MPLBACKEND" not in os.environ and interactive_gui and headless:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    # No "tight" bounding box: every figure lays itself out (constrained or tight
    # layout), and a tight box would draw each figure twice when saving.
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.formatter.useoffset": False,  # cosines near 1 read better as 0.9995 than as 1e-4 + 0.9994
}

COLOURMAP = "viridis"


def layer_colours(count: int):
    """One colour per layer, from the first (dark) to the last (light)."""
    plt = pyplot()
    cmap = plt.get_cmap(COLOURMAP)
    return [cmap(index / max(count - 1, 1) * 0.9) for index in range(count)]


def save(figure, path) -> None:
    """Save `figure` to `path` (format from the suffix, PNG by default), creating the
    folder, atomically (temporary file then rename)."""
    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        path += ".png"
    with atomic_path(path, prefix=".figure-") as temporary:
        figure.savefig(temporary)
