"""Coordinate-check figure."""

from __future__ import annotations

import numpy as np

from ..experiments import load_coord_check
from ..theory import CoordCheck
from ._style import STYLE, layer_colours, pyplot, save


def coord_check(result, *, path=None, size_label: str = "width"):
    """Plot a coordinate check: per-layer scales against size, at initialisation (top
    row) and at the last step (bottom row), for the activations, the feature updates and
    the prediction errors. Flat lines mean a size-stable parameterisation.

    **Arguments:**

    - `result`: a [`CoordCheck`][pcscale.theory.CoordCheck], or the path of a file
      written by `pcscale.experiments.save_coord_check`.
    - `path`: where to save the figure (PNG unless the suffix says otherwise); None
      only returns it.
    - `size_label`: the x-axis label. Default "width".

    **Returns:** the matplotlib `Figure`.
    """
    if not isinstance(result, CoordCheck):
        result = load_coord_check(result)
    plt = pyplot()
    sizes = np.asarray(result.sizes)
    last = result.steps
    panels = [
        ("activation", "activation RMS", (0, last)),
        ("update", "feature update RMS", (0, last - 1)),
        ("error", "prediction error RMS", (0, last - 1)),
    ]
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(2, 3, figsize=(10, 5.6), squeeze=False)
        for column, (name, title, steps) in enumerate(panels):
            values = getattr(result, name)
            layers = min(np.shape(v)[1] for v in values)
            colours = layer_colours(layers)
            for row, step in enumerate(steps):
                axis = axes[row, column]
                for layer in range(layers):
                    curve = np.array([np.asarray(v)[step, layer] for v in values])
                    if np.all(curve == 0):
                        continue
                    axis.plot(sizes, curve, "o-", color=colours[layer], label=f"layer {layer + 1}", markersize=3)
                axis.set_xscale("log", base=2)
                axis.set_yscale("log")
                axis.set_title(f"{title}, step {step}" if name != "activation" else f"{title}, t = {step}")
                axis.set_xlabel(size_label)
        axes[0, 0].legend(ncol=2)
        figure.suptitle("Coordinate check: flat lines mean size-stable")
        figure.tight_layout()
    if path is not None:
        save(figure, path)
    return figure
