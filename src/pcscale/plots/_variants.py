"""Figure of `pc-variants`: test accuracy per epoch of every method, beside the time per
epoch relative to BP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._panels import finish, no_data, panel_grid, styled


def plot_variants(run, out_dir: Path) -> list[Path]:
    """Test accuracy (feedforward pass) against epoch for every method, and each method's
    time for its last epoch (the first compiles) over BP's (failed cells drawn dashed)."""
    results = {r.cell.settings["method"]: r.info for r in run.results}
    with styled():
        figure, (accuracy, cost) = panel_grid(2, columns=2)
        if not results:
            no_data(accuracy)
            no_data(cost)
        for method, info in results.items():
            values = info["history"]["test_accuracy"]
            failed = bool(info.get("failure"))
            accuracy.plot(np.arange(1, len(values) + 1), values, marker="o", linestyle="--" if failed else "-",
                          label=method + (" (failed)" if failed else ""))
        accuracy.set_xlabel("epoch")
        accuracy.set_ylabel("test accuracy (feedforward)")
        if results:
            accuracy.legend()
        bp = results.get("bp")
        if bp is not None:
            base = float(bp["history"]["seconds"][-1])
            names = list(results)
            ratios = [float(results[m]["history"]["seconds"][-1]) / base for m in names]
            cost.bar(names, ratios, color="tab:blue")
            cost.axhline(1.0, color="black", linewidth=0.8)
            cost.set_ylabel("time of the last epoch / BP's")
        else:
            no_data(cost, "no BP cell to compare with")
        c = run.config
        title = (f"pc-variants: {c.parameterisation} tanh residual MLP N = {c.width}, L = {c.hidden_layers + 1} "
                 f"on {c.dataset}, B = {c.batch}, {c.epochs} epochs")
        return [finish(figure, Path(out_dir) / "variants.png", title)]
