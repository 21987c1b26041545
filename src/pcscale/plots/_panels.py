"""Reusable drawing pieces: a grid of panels, an annotated heatmap, a set of curves, and
writing a finished figure. Every experiment's figures are built from these, so they all
look alike."""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ._style import COLOURMAP, STYLE, pyplot, save

PANEL_SIZE = (3.4, 2.7)  # inches per panel
SINGLE_PANEL = (5.8, 3.8)  # a figure with one panel
COSINE = r"$\cos(g^{PC}, g^{BP})$"


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """The shared rc settings (`STYLE`) for everything drawn and saved inside."""
    with pyplot().rc_context(STYLE):
        yield


def panel_grid(count: int, *, columns: int | None = None, size=PANEL_SIZE, sharex: bool = False,
               sharey: bool = False):
    """A figure with `count` panels laid out in rows of `columns` (default: up to 4),
    using constrained layout; panels beyond `count` are hidden.

    **Arguments:**

    - `count`: the number of panels (≥ 1).
    - `columns`: panels per row; default `min(count, 4)`.
    - `size`: (width, height) of one panel in inches.
    - `sharex`, `sharey`: share the axes between panels.

    **Returns:** `(figure, axes)`, `axes` a list of `count` matplotlib `Axes` in reading
    order.
    """
    if count < 1:
        raise ValueError(f"`count` must be at least 1 panel, got {count}.")
    columns = min(count, 4) if columns is None else max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = pyplot().subplots(
        rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False, layout="constrained",
        sharex=sharex, sharey=sharey,
    )
    flat = list(axes.ravel())
    for unused in flat[count:]:
        unused.set_visible(False)
    if sharex:
        # A shared x-axis labels the bottom row only; panels above a hidden one are the
        # bottom of their column and need their tick labels back.
        for index in range(max(0, count - columns), count):
            flat[index].tick_params(labelbottom=True)
    return figure, flat[:count]


def finish(figure, path: Path, title: str) -> Path:
    """Give `figure` its title, write it atomically to `path` and close it. Plain-text
    title lines longer than the figure is wide are wrapped.

    **Returns:** `path`.
    """
    characters = max(40, int(figure.get_figwidth() * 11.5))
    lines = [line if "$" in line else textwrap.fill(line, characters) for line in title.split("\n")]
    figure.suptitle("\n".join(lines))
    try:
        save(figure, path)
    finally:
        pyplot().close(figure)
    return Path(path)


def _positive(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=float)
    values[~(values > 0)] = np.nan
    return values


def curves(
    axis,
    x,
    series: Mapping[str, Sequence[float] | np.ndarray],
    *,
    colours: Sequence | None = None,
    linestyle: str = "-",
    marker: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    labelled: bool = True,
    legend: bool = True,
    **line_options,
) -> list:
    """Draw one line per entry of `series` against the shared `x`, skipping entries
    with no finite values (and, on a log y-axis, values ≤ 0). Calling it twice on one
    axis overlays a second set (e.g. dashed trajectory cosines over solid lockstep ones);
    pass `labelled=False` to keep those out of the legend.

    **Arguments:**

    - `axis`: the matplotlib `Axes`.
    - `x`: the x values, shared by every series.
    - `series`: label → y values (same length as `x`), drawn in order.
    - `colours`: one colour per series; default the sequential colour map.
    - `linestyle`, `marker`, `**line_options`: passed to `Axes.plot`.
    - `log_x`, `log_y`: logarithmic axes.
    - `labelled`: give the lines their labels (False: left out of any legend).
    - `legend`: draw the axis legend now (False: the caller draws it later).

    **Returns:** the list of `Line2D`s drawn.
    """
    from ._style import layer_colours

    x = np.asarray(x, dtype=float)
    colours = list(colours) if colours is not None else layer_colours(len(series))
    if len(colours) < len(series):
        raise ValueError(f"`colours` has {len(colours)} entries for {len(series)} series; give one colour "
                         "per series.")
    lines = []
    for (label, y), colour in zip(series.items(), colours, strict=False):  # colours may be more
        y = np.asarray(y, dtype=float)
        if y.shape != x.shape:
            raise ValueError(f"series {label!r} has shape {y.shape} but `x` has shape {x.shape}; give one y "
                             "value per x value.")
        shown = _positive(y) if log_y else y
        if not np.any(np.isfinite(shown)):
            continue
        lines += axis.plot(x, shown, linestyle=linestyle, marker=marker, color=colour,
                           label=label if labelled else "_nolegend_", **line_options)
    if log_x:
        axis.set_xscale("log")
    if log_y and lines:
        axis.set_yscale("log")
    if legend and any(not line.get_label().startswith("_") for line in axis.get_lines()):
        axis.legend()
    return lines


def spans_decades(*arrays, factor: float = 20.0) -> bool:
    """Whether the positive finite values of `arrays` span more than `factor` (max/min):
    the test for a logarithmic axis, which would only clutter a narrow range."""
    if not arrays:
        return False
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    return bool(values.size) and bool(values.max() > factor * values.min())


def value_ticks(axis, values) -> None:
    """Put the x ticks of a logarithmic axis at `values` (widths, budgets…), written as
    plain numbers, with no minor tick labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    values = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    if not values:
        return
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(FixedLocator(values))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    axis.xaxis.set_major_formatter(formatter)
    axis.xaxis.set_minor_formatter(NullFormatter())


def no_data(axis, message: str = "no data") -> None:
    """Mark an empty panel."""
    axis.text(0.5, 0.5, message, transform=axis.transAxes, ha="center", va="center", color="0.5")


def heatmap(
    axis,
    values,
    *,
    rows: Sequence,
    columns: Sequence,
    row_label: str = "",
    column_label: str = "",
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = "{:.3g}",
    colourbar_label: str = "",
    cmap: str = COLOURMAP,
):
    """An annotated heatmap: `values[i, j]` is drawn in row `rows[i]` (bottom to top)
    and column `columns[j]` (left to right), with its number written in the cell and a
    colour bar beside. NaN cells are left blank (missing results).

    **Arguments:**

    - `axis`: the matplotlib `Axes`.
    - `values`: array of shape `(len(rows), len(columns))`.
    - `rows`, `columns`: tick labels (e.g. depths and widths).
    - `row_label`, `column_label`: axis labels.
    - `log`: logarithmic colour scale (values ≤ 0 are then left blank).
    - `vmin`, `vmax`: colour limits; default the finite range of `values`.
    - `fmt`: format of the numbers written in the cells.
    - `colourbar_label`: the colour bar's label.
    - `cmap`: the colour map.

    **Returns:** the `AxesImage`; `image.get_array()` is `values` (masked where blank).
    """
    from matplotlib.colors import LogNorm, Normalize

    values = np.asarray(values, dtype=float)
    if values.shape != (len(rows), len(columns)):
        raise ValueError(f"`values` has shape {values.shape} but `rows` × `columns` is {len(rows)} × "
                         f"{len(columns)}; give one value per (row, column) with rows on axis 0.")
    shown = _positive(values) if log else values
    masked = np.ma.masked_invalid(shown)
    finite = shown[np.isfinite(shown)]
    low = vmin if vmin is not None else (finite.min() if finite.size else (1.0 if log else 0.0))
    high = vmax if vmax is not None else (finite.max() if finite.size else low * 10 if log else low + 1)
    if high <= low:  # a single value: widen so the colour scale is defined
        low, high = (low / 2, high * 2) if log else (low - 0.5, high + 0.5)
    norm = LogNorm(low, high) if log else Normalize(low, high)
    image = axis.imshow(masked, origin="lower", aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    axis.set_xticks(range(len(columns)), [str(c) for c in columns])
    axis.set_yticks(range(len(rows)), [str(r) for r in rows])
    axis.set_xlabel(column_label)
    axis.set_ylabel(row_label)
    axis.grid(False)
    colour_map = image.get_cmap()
    for i in range(len(rows)):
        for j in range(len(columns)):
            value = shown[i, j]
            if not np.isfinite(value):
                axis.text(j, i, "—", ha="center", va="center", color="0.5", fontsize=7)
                continue
            red, green, blue, _ = colour_map(norm(value))
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.55
            axis.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                      color="black" if light else "white")
    colourbar = axis.figure.colorbar(image, ax=axis)
    colourbar.set_label(colourbar_label)
    return image
