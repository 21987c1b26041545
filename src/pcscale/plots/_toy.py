"""Figures of the toy-task family (docs/background.md §5.2–5.5): `toy`, `toy-sp`,
`gamma0-sweep` and `saddle`. All four share one layout: one panel per group of cells
(skips or not, and any setting held fixed within the group), one curve per value of the
swept setting (width N, γ0, or (H, N) for `saddle`), seeds averaged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ._data import group, mean_metric, nan_mean, time_axis, trained
from ._panels import COSINE, curves, finish, no_data, panel_grid, spans_decades, styled, value_ticks
from ._style import layer_colours

SETTINGS = ("skips", "hidden_layers", "gamma0", "width")
SYMBOLS = {"hidden_layers": "H", "gamma0": "γ0", "width": "N"}
QUANTITY_COLOURS = {"F*": "tab:blue", "PC loss": "tab:orange", "BP loss": "tab:green", "DMFT": "black"}


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one experiment of the family is drawn: `curve_keys` give one curve each,
    `x_key` is the x-axis of the gap-against-theory plot, `log_time` puts t + 1 on a
    log axis."""

    curve_keys: tuple[str, ...]
    x_key: str
    log_time: bool = False


LAYOUTS = {
    "toy": _Layout(("width",), "width"),
    "toy-sp": _Layout(("width",), "width"),
    "gamma0-sweep": _Layout(("gamma0",), "gamma0"),
    "saddle": _Layout(("hidden_layers", "width"), "width", log_time=True),
}


def _value(key: str, value) -> str:
    return f"{SYMBOLS[key]} = {value:g}" if isinstance(value, float) else f"{SYMBOLS[key]} = {value}"


class _Family:
    """A toy-family run's network cells grouped into panels and curves, and its DMFT
    curves."""

    def __init__(self, run):
        self.run = run
        self.layout = LAYOUTS[run.experiment]
        networks = [r for r in trained(run.results) if r.cell.settings.get("kind", "network") == "network"]
        self.group_keys = tuple(k for k in SETTINGS if k not in self.layout.curve_keys)
        varying = {k for k in SETTINGS if len({r.cell.settings[k] for r in networks}) > 1}
        self.shown_keys = tuple(k for k in self.group_keys[1:] if k in varying)  # beyond skips
        self.fixed = {k: networks[0].cell.settings[k] for k in SETTINGS[1:] if networks and k not in varying}
        ordered = sorted(networks, key=lambda r: tuple(r.cell.settings[k] for k in SETTINGS[1:]))
        ordered.sort(key=lambda r: not r.cell.settings["skips"])  # skips first, as the paper
        self.groups = group(ordered, lambda r: tuple(r.cell.settings[k] for k in self.group_keys))
        self.dmft = {}
        for r in run.results:
            s = r.cell.settings
            if s.get("kind") == "dmft":
                curve = np.asarray(r.info["dmft_loss"], float)
                self.dmft.setdefault((s["hidden_layers"], s["gamma0"]), {})[s["data_seed"]] = curve
        self.steps = run.config.steps

    def curves_of(self, members) -> dict:
        """One entry per curve key value: label → the cells (seeds) of that curve."""
        by_key = group(members, lambda r: tuple(r.cell.settings[k] for k in self.layout.curve_keys))
        return {", ".join(_value(k, v) for k, v in zip(self.layout.curve_keys, key, strict=True)): cells
                for key, cells in by_key.items()}

    def title(self, key: tuple) -> str:
        settings = dict(zip(self.group_keys, key, strict=True))
        words = ["skips" if settings["skips"] else "no skips"]
        words += [_value(k, settings[k]) for k in self.shown_keys]
        return ", ".join(words)

    def slug(self, key: tuple) -> str:
        settings = dict(zip(self.group_keys, key, strict=True))
        words = ["skips" if settings["skips"] else "noskips"]
        words += [f"{SYMBOLS[k].replace('γ0', 'g')}{settings[k]:g}" for k in self.shown_keys]
        return "-".join(words)

    def dmft_for(self, cells) -> np.ndarray | None:
        """The DMFT loss matching these cells (no skips only), averaged over their data
        seeds; None when the run has none."""
        s = cells[0].cell.settings
        if s["skips"]:
            return None
        curves_by_seed = self.dmft.get((s["hidden_layers"], s["gamma0"]), {})
        found = [curves_by_seed[d] for d in sorted({c.cell.settings["data_seed"] for c in cells})
                 if d in curves_by_seed]
        return nan_mean(found)[: self.steps] if found else None

    def time(self):
        return time_axis(self.steps, log_time=self.layout.log_time)

    def describe(self) -> str:
        c = self.run.config
        fixed = ", ".join(_value(k, v) for k, v in self.fixed.items())
        seeds = f"seeds {', '.join(map(str, c.seeds))}"
        if c.data_seed != -1:
            seeds += f" (data seed {c.data_seed})"
        return (f"{self.run.experiment}: linear MLPs on the toy task, {c.parameterisation}, {fixed}, "
                f"GD η = {c.learning_rate:g}, closed-form inference, T = {c.steps}, {seeds}")


def _per_group(family: _Family, out_dir: Path, name: str, title: str, draw) -> Path:
    """One panel per group; `draw(axis, curves_of_group, colours)` fills a panel."""
    with styled():
        figure, axes = panel_grid(max(len(family.groups), 1), columns=2, size=(4.2, 3.1))
        # One panel more than groups when there are none (it says so).
        for axis, (key, members) in zip(axes, family.groups.items(), strict=False):
            by_curve = family.curves_of(members)
            draw(axis, by_curve, layer_colours(len(by_curve)))
            axis.set_title(family.title(key))
        if not family.groups:
            no_data(axes[0])
        return finish(figure, out_dir / name, f"{title}\n{family.describe()}")


def _gap_over_training(family: _Family, out_dir: Path) -> Path:
    t, t_label = family.time()

    def draw(axis, by_curve, colours):
        series = {label: mean_metric(cells, "spectral_gap") for label, cells in by_curve.items()}
        if not curves(axis, t, series, colours=colours, log_y=True, log_x=family.layout.log_time):
            no_data(axis)
        axis.set_xlabel(t_label)
        axis.set_ylabel(r"$s(\theta_t) - 1$")

    return _per_group(family, out_dir, "gap-over-training.png",
                      "PC–BP gap s − 1 during training (s: the eigenvalue of S)", draw)


def _gap_vs_theory(family: _Family, out_dir: Path) -> Path:
    x_key = family.layout.x_key
    series_keys = tuple(k for k in family.layout.curve_keys if k != x_key)

    def draw(axis, by_curve, colours):
        members = [c for cells in by_curve.values() for c in cells]
        lines = group(members, lambda r: tuple(r.cell.settings[k] for k in series_keys))
        palette = layer_colours(len(lines)) if len(lines) > 1 else ["tab:blue"]
        drawn = False
        for (key, cells), colour in zip(lines.items(), palette, strict=False):  # one colour at least
            label = ", ".join(_value(k, v) for k, v in zip(series_keys, key, strict=True))
            ordered = sorted(cells, key=lambda r: r.cell.settings[x_key])
            points = group(ordered, lambda r: r.cell.settings[x_key])
            x = np.array(list(points), dtype=float)
            for r in cells:  # the individual seeds, faint
                axis.plot(r.cell.settings[x_key], np.asarray(r.trace.spectral_gap, float)[0], ".",
                          color=colour, alpha=0.3)
            measured = [nan_mean([np.asarray(r.trace.spectral_gap, float)[:1] for r in rs])[0]
                        for rs in points.values()]
            theory = [float(np.mean([r.info.get("theory_trace_gap", np.nan) for r in rs]))
                      for rs in points.values()]
            prefix = f"{label}: " if label else ""
            options = {"colours": [colour], "log_x": True, "log_y": True, "legend": False}
            measured_label = f"{prefix}measured (seed mean)"
            drawn |= bool(curves(axis, x, {measured_label: measured}, marker="o", linestyle="none",
                                 **options))
            curves(axis, x, {prefix + r"theory $E[s - 1]$": theory}, linestyle="--", **options)
        if drawn:
            axis.legend()
            value_ticks(axis, [c.cell.settings[x_key] for c in members])
        else:
            no_data(axis)
        axis.set_xlabel({"width": "width N", "gamma0": "output scale γ0"}.get(x_key, x_key))
        axis.set_ylabel(r"$s(\theta_0) - 1$")

    return _per_group(family, out_dir, "gap-vs-theory.png",
                      "PC–BP gap at initialisation against theory (docs/background.md §4.4)", draw)


def _energy_loss(family: _Family, out_dir: Path) -> list[Path]:
    t, t_label = family.time()
    paths = []
    for key, members in family.groups.items():
        by_curve = family.curves_of(members)
        with_dmft = ""
        with styled():
            figure, axes = panel_grid(len(by_curve), sharex=True)
            for axis, (label, cells) in zip(axes, by_curve.items(), strict=True):
                series = {"F*": mean_metric(cells, "pc_energy"), "PC loss": mean_metric(cells, "pc_loss"),
                          "BP loss": mean_metric(cells, "bp_loss")}
                dmft = family.dmft_for(cells)
                if dmft is not None:
                    padding = np.full(max(0, len(t) - len(dmft)), np.nan)
                    series["DMFT"] = np.concatenate([dmft, padding])[: len(t)]
                    with_dmft = " and DMFT"
                styles = {"F*": "-", "PC loss": "--", "BP loss": "-", "DMFT": ":"}
                log_y = spans_decades(*series.values(), factor=5.0)
                for name, values in series.items():
                    curves(axis, t, {name: values}, colours=[QUANTITY_COLOURS[name]], linestyle=styles[name],
                           log_y=log_y, log_x=family.layout.log_time, legend=False)
                axis.legend()
                axis.set_title(label)
                axis.set_xlabel(t_label)
                axis.set_ylabel("energy / loss")
            title = f"Equilibrated energy F*, PC and BP losses{with_dmft}, {family.title(key)}"
            paths.append(finish(figure, out_dir / f"energy-loss-{family.slug(key)}.png",
                                f"{title}\n{family.describe()}"))
    return paths


def _ratios(family: _Family, out_dir: Path) -> Path:
    t, t_label = family.time()

    def draw(axis, by_curve, colours):
        def ratio(cells, loss):
            with np.errstate(invalid="ignore", divide="ignore"):
                return mean_metric(cells, loss) / mean_metric(cells, "pc_energy")

        pc = {label: ratio(cells, "pc_loss") for label, cells in by_curve.items()}
        bp = {label: ratio(cells, "bp_loss") for label, cells in by_curve.items()}
        log_x = family.layout.log_time
        drawn = curves(axis, t, pc, colours=colours, log_x=log_x)
        curves(axis, t, bp, colours=colours, linestyle="--", log_x=log_x, labelled=False, legend=False)
        if not drawn:
            no_data(axis)
        axis.set_xlabel(t_label)
        axis.set_ylabel(r"$\mathcal{L}\,/\,F^*$")

    title = r"Loss over equilibrated energy $\mathcal{L}/F^*$: PC weights' loss solid, BP loss dashed"
    return _per_group(family, out_dir, "ratios.png", title, draw)


def _cosine(family: _Family, out_dir: Path) -> Path:
    t, t_label = family.time()

    def draw(axis, by_curve, colours):
        lockstep = {label: mean_metric(c, "cosine_lockstep") for label, c in by_curve.items()}
        trajectory = {label: mean_metric(c, "cosine_trajectory") for label, c in by_curve.items()}
        log_x = family.layout.log_time
        drawn = curves(axis, t, lockstep, colours=colours, log_x=log_x)
        curves(axis, t, trajectory, colours=colours, linestyle="--", log_x=log_x, labelled=False,
               legend=False)
        if not drawn:
            no_data(axis)
        axis.set_xlabel(t_label)
        axis.set_ylabel(COSINE)

    return _per_group(family, out_dir, "cosine.png",
                      "Cosine of PC and BP gradients (lockstep solid, along the BP trajectory dashed)", draw)


def _loss_vs_loss(family: _Family, out_dir: Path) -> Path:
    """BP loss against PC loss for the narrowest and the widest network."""

    def draw(axis, by_curve, colours):
        labels = list(by_curve)
        chosen = sorted({0, len(labels) - 1})
        values = []
        for index in chosen:
            cells = by_curve[labels[index]]
            pc, bp = mean_metric(cells, "pc_loss"), mean_metric(cells, "bp_loss")
            axis.plot(pc, bp, "o-", markersize=2, color=colours[index], label=labels[index])
            values += [pc, bp]
        finite = np.concatenate(values)[np.isfinite(np.concatenate(values))] if values else np.array([])
        if finite.size:
            low, high = finite.min(), finite.max()
            axis.plot([low, high], [low, high], ":", color="0.5", label="BP = PC")
            axis.legend()
        else:
            no_data(axis)
        axis.set_xlabel(r"PC loss $\mathcal{L}(\theta_t^{PC})$")
        axis.set_ylabel(r"BP loss $\mathcal{L}(\theta_t^{BP})$")

    return _per_group(family, out_dir, "loss-vs-loss.png",
                      "BP against PC loss along training, narrowest and widest", draw)


def plot_toy_family(run, out_dir: Path) -> list[Path]:
    """Figures of `toy`, `toy-sp`, `gamma0-sweep` and `saddle` runs:
    `gap-over-training.png`, `gap-vs-theory.png`, `energy-loss-<group>.png` (one per
    group, e.g. `energy-loss-skips.png`), `ratios.png`, `cosine.png`, and for `toy` and
    `toy-sp` also `loss-vs-loss.png`."""
    family = _Family(run)
    if not family.groups:
        return []  # only DMFT cells so far
    paths = [_gap_over_training(family, out_dir), _gap_vs_theory(family, out_dir)]
    paths += _energy_loss(family, out_dir)
    paths += [_ratios(family, out_dir), _cosine(family, out_dir)]
    if family.layout.curve_keys == ("width",):
        paths.append(_loss_vs_loss(family, out_dir))
    return paths
