"""Figures of the benchmark suite (`pcscale bench`): test accuracy against depth (or per
method) and per epoch, and the signal reach at the deepest depth — each layer's update
norm and its cosine with BP's update."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ._panels import finish, no_data, panel_grid, styled


def _cells(run) -> dict[tuple[str, int], dict]:
    return {(r.info["method"], r.info["depth"]): r.info for r in run.results}


def _value(v) -> float:
    return float(v) if v is not None and math.isfinite(v) else np.nan


def plot_bench(run, out_dir: Path) -> list[Path]:
    """Two figures: `accuracy.png` (final test accuracy against depth for each method,
    or per method at the task's one depth, beside accuracy per epoch at the deepest
    depth) and `signal_reach.png` (at the deepest depth, each layer's weight change over
    the last epoch and its update's cosine with BP's, one line per method; failed cells
    dashed)."""
    cells = _cells(run)
    out_dir = Path(out_dir)
    depths = sorted({depth for _, depth in cells})
    deepest = depths[-1] if depths else 0
    methods = list(dict.fromkeys(method for method, _ in cells))
    title = f"{run.experiment}: {run.config.parameterisation}, {run.config.epochs} epoch(s), B = {run.config.batch}"
    paths = []
    with styled():
        figure, (by_depth, by_epoch) = panel_grid(2, columns=2)
        if not cells:
            no_data(by_depth)
            no_data(by_epoch)
        for method in methods:
            ds = [d for d in depths if (method, d) in cells]
            finals = [cells[(method, d)]["history"]["test_accuracy"][-1] for d in ds]
            failed = any(cells[(method, d)].get("failure") for d in ds)
            style = "--" if failed else "-"
            if len(depths) > 1:
                by_depth.plot(ds, finals, marker="o", linestyle=style, label=method + (" (failed)" if failed else ""))
            else:
                by_depth.bar([method], finals, color="tab:red" if failed else "tab:blue")
            info = cells.get((method, deepest))
            if info is not None:
                values = info["history"]["test_accuracy"]
                by_epoch.plot(np.arange(1, len(values) + 1), values, marker="o",
                              linestyle="--" if info.get("failure") else "-", label=method)
        if len(depths) > 1:
            by_depth.set_xscale("log", base=2)
            by_depth.set_xlabel("depth L")
            by_depth.legend()
        by_depth.set_ylabel("final test accuracy (feedforward)")
        by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_epoch.set_xlabel(f"epoch (L = {deepest})")
        by_epoch.set_ylabel("test accuracy")
        if cells:
            by_epoch.legend()
        paths.append(finish(figure, out_dir / "accuracy.png", title))

        figure, (norms, cosines) = panel_grid(2, columns=2)
        drawn, positive = False, False
        for method in methods:
            info = cells.get((method, deepest))
            if info is None or not info["history"]["cosines"]:
                continue
            style = "--" if info.get("failure") else "-"
            layer_norms = [_value(v) for v in info["history"]["update_norms"][-1]]
            layer_cos = [_value(v) for v in info["history"]["cosines"][-1]]
            positive = positive or any(v > 0 for v in layer_norms)
            layers = np.arange(1, len(layer_cos) + 1)
            norms.plot(layers, layer_norms, linestyle=style, label=method)
            cosines.plot(layers, layer_cos, linestyle=style, label=method)
            drawn = True
        if drawn:
            if positive:
                norms.set_yscale("log")
            norms.legend()
            cosines.axhline(0.9, color="black", linewidth=0.8, linestyle=":")
        else:
            no_data(norms)
            no_data(cosines)
        for axis in (norms, cosines):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        norms.set_xlabel(f"layer (L = {deepest})")
        norms.set_ylabel("weight change over the last epoch (norm)")
        cosines.set_xlabel(f"layer (L = {deepest})")
        cosines.set_ylabel("cosine with BP's update, same batch")
        paths.append(finish(figure, out_dir / "signal_reach.png", title))
    return paths
