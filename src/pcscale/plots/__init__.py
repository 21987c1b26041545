"""Figures from pcscale results (needs the `plot` extra: pip install 'pcscale[plot]').
`plot_run(run_dir)` draws every figure of an experiment's results folder; `heatmap` and
`curves` are the drawing pieces those figures are made of."""

from ._coord import coord_check as coord_check
from ._panels import curves as curves, heatmap as heatmap, panel_grid as panel_grid
from ._run import plot_run as plot_run

__all__ = ["coord_check", "curves", "heatmap", "panel_grid", "plot_run"]
