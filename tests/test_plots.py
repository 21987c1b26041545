"""Figures from results folders (`pcscale.plots`). Run folders are written with the
experiments' own runner and file format, but with synthetic cell results in place of
training, so every value drawn is known in advance and the tests stay fast."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image  # noqa: E402

import pcscale.experiments as ex  # noqa: E402
import pcscale.plots as plots  # noqa: E402
from pcscale.plots import _panels  # noqa: E402

TRACE_FIELDS = [f.name for f in dataclasses.fields(ex.Trace) if f.name != "failure"]
INTEGER_FIELDS = ("inference_steps", "result")
BOOLEAN_FIELDS = ("converged", "pc_updated", "bp_updated")


def synthetic_trace(steps: int, layers: int, **values) -> ex.Trace:
    """A Trace of smooth positive placeholder values, with `values` overriding fields."""
    t = np.arange(steps, dtype=float)
    fields = {}
    for name in TRACE_FIELDS:
        if name in ("final_pc_loss", "final_bp_loss"):
            fields[name] = 0.1
        elif name in INTEGER_FIELDS:
            fields[name] = np.full(steps, 10, np.int64)
        elif name in BOOLEAN_FIELDS:
            fields[name] = np.ones(steps, bool)
        elif name.startswith("layer_"):
            fields[name] = np.tile(0.9 - 0.01 * np.arange(layers), (steps, 1))
        else:
            fields[name] = 0.5 + 0.4 / (1 + t)
    fields.update(values)
    return ex.Trace(**fields)


def write_run(tmp_path: Path, name: str, make_cell, **config) -> Path:
    """A run folder of experiment `name` (its quick preset with `config` replaced),
    each cell's result given by `make_cell(config, cell)`, written by the real runner."""
    experiment = ex.get(name)
    settings = dataclasses.replace(experiment.preset("quick"), **config)
    fake = dataclasses.replace(experiment, run_cell=lambda c, cell, progress: make_cell(c, cell))
    out_dir = tmp_path / name
    ex.run_experiment(fake, settings, out_dir, progress=False)
    return out_dir


@pytest.fixture
def drawn(monkeypatch):
    """Records what each saved figure shows: per file name, the arrays of its images
    and the (label, x, y) of its lines, axis by axis."""
    record = {}
    original = _panels.save

    def recording_save(figure, path):
        record[Path(path).name] = {
            "images": [np.ma.filled(np.ma.asarray(image.get_array(), float), np.nan)
                       for axis in figure.axes for image in axis.get_images()],
            "lines": [(line.get_label(), np.asarray(line.get_xdata(), float),
                       np.asarray(line.get_ydata(), float)) for axis in figure.axes for line in axis.get_lines()],
        }
        original(figure, path)

    monkeypatch.setattr(_panels, "save", recording_save)
    return record


def assert_pngs(paths, names):
    assert [p.name for p in paths] == names
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas


# width-depth-linear: cosine = 1 − H/(N(t+1)) − 0.02·seed, so its seed mean is known.
def wdl_cosine(h, n, seed, steps):
    return 1 - h / (n * (1 + np.arange(steps))) - 0.02 * seed


def wdl_cell(config, cell):
    h, n, seed = (cell.settings[k] for k in ("hidden_layers", "width", "seed"))
    steps = config.steps
    trace = synthetic_trace(steps, h + 1, cosine_lockstep=wdl_cosine(h, n, seed, steps),
                            cosine_trajectory=wdl_cosine(h, n, seed, steps) - 0.01,
                            spectral_gap=np.full(steps, 2 * h / n), trace_gap=np.full(steps, h / n))
    info = {"dataset": "synthetic", "depth": h + 1, "theory_trace_gap": 1.1 * h / n}
    return ex.CellResult(cell, trace, info, 0.0)


WDL = {"widths": (8, 2, 4), "hidden_layers": (1, 3), "seeds": (0, 1), "steps": 5}
WDL_FIGURES = ["cosine-heatmaps.png", "cosine-heatmaps-trajectory.png", "gap-vs-theory.png", "gap-vs-width.png", "energy-loss-heatmaps.png"]


def test_heatmap_puts_each_value_in_its_row_and_column():
    plt = _panels.pyplot()
    values = np.array([[0.1, 0.2, 0.3], [0.4, np.nan, 0.6]])  # rows: depths, columns: widths
    figure, axis = plt.subplots()
    image = plots.heatmap(axis, values, rows=[2, 4], columns=[8, 16, 32], fmt="{:.1f}")
    shown = image.get_array()
    np.testing.assert_array_equal(shown.mask, np.isnan(values))
    np.testing.assert_array_equal(shown.filled(np.nan), values)
    assert image.origin == "lower"  # first row at the bottom: depth grows upwards
    assert [t.get_text() for t in axis.get_xticklabels()] == ["8", "16", "32"]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["2", "4"]
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in axis.texts}
    assert texts[(2, 0)] == "0.3" and texts[(0, 1)] == "0.4" and texts[(1, 1)] == "—"
    log_image = plots.heatmap(axis, np.array([[1e-3, -1.0]]), rows=[1], columns=[1, 2], log=True)
    assert log_image.get_array().mask.tolist() == [[False, True]]  # a log scale cannot show −1
    with pytest.raises(ValueError, match="rows.*columns"):
        plots.heatmap(axis, values.T, rows=[2, 4], columns=[8, 16, 32])
    plt.close(figure)


def test_curves_skip_empty_series_and_non_positive_values_on_log_axes():
    plt = _panels.pyplot()
    figure, axis = plt.subplots()
    x = np.arange(3)
    series = {"a": [1.0, -1.0, 3.0], "empty": [np.nan] * 3, "b": [0.0, 0.0, 0.0]}
    lines = plots.curves(axis, x, series, log_y=True)
    assert [line.get_label() for line in lines] == ["a"]
    np.testing.assert_array_equal(lines[0].get_ydata(), [1.0, np.nan, 3.0])
    assert axis.get_yscale() == "log"
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["a"]
    overlay = plots.curves(axis, x, {"a": [2.0, 2.0, 2.0]}, labelled=False, legend=False)
    assert overlay[0].get_label().startswith("_")  # kept out of the legend
    with pytest.raises(ValueError, match="one y value per x value"):
        plots.curves(axis, x, {"short": [1.0]})
    plt.close(figure)


def test_width_depth_linear_figures_show_the_seed_mean_on_the_grid(tmp_path, drawn):
    run_dir = write_run(tmp_path, "width-depth-linear", wdl_cell, **WDL)
    paths = plots.plot_run(run_dir)
    assert_pngs(paths, WDL_FIGURES)
    assert all(p.parent == run_dir / "figures" for p in paths)
    depths, widths, steps = (1, 3), (2, 4, 8), WDL["steps"]
    images = drawn["cosine-heatmaps.png"]["images"]
    assert len(images) == 3  # t = 0, T // 2, T − 1
    for image, t in zip(images, (0, steps // 2, steps - 1)):
        expected = [[np.mean([wdl_cosine(h, n, seed, steps)[t] for seed in (0, 1)]) for n in widths]
                    for h in depths]
        np.testing.assert_allclose(image, expected)
    for image, t in zip(drawn["cosine-heatmaps-trajectory.png"]["images"], (0, steps // 2, steps - 1)):
        expected = [[np.mean([wdl_cosine(h, n, seed, steps)[t] - 0.01 for seed in (0, 1)]) for n in widths]
                    for h in depths]
        np.testing.assert_allclose(image, expected)
    spectral, trace, theory, error = drawn["gap-vs-theory.png"]["images"]
    np.testing.assert_allclose(spectral, [[2 * h / n for n in widths] for h in depths])
    np.testing.assert_allclose(theory, [[1.1 * h / n for n in widths] for h in depths])
    np.testing.assert_allclose(error, np.full((2, 3), 0.1 / 1.1))


def toy_cell(config, cell):
    s = cell.settings
    if s["kind"] == "dmft":
        return ex.CellResult(cell, None, {"dmft_loss": 0.6 - 0.01 * np.arange(config.steps),
                                          "fixed_point_change": 0.0, "depth": s["hidden_layers"] + 1}, 0.0)
    n = s["width"]
    trace = synthetic_trace(config.steps, s["hidden_layers"] + 1, spectral_gap=np.full(config.steps, 4 / n))
    return ex.CellResult(cell, trace, {"dataset": "toy", "depth": s["hidden_layers"] + 1,
                                       "theory_trace_gap": 3 / n}, 0.0)


def test_toy_run_with_a_dmft_cell(tmp_path, drawn):
    run_dir = write_run(tmp_path, "toy", toy_cell, widths=(4, 8), steps=3, seeds=(0,), skips=(False,),
                        data_seed=0)
    assert any(r.trace is None for r in ex.load_run(run_dir).results)  # the DMFT cell
    paths = plots.plot_run(run_dir, out_dir=tmp_path / "figures")
    assert_pngs(paths, ["gap-over-training.png", "gap-vs-theory.png", "energy-loss-noskips.png", "ratios.png",
                        "cosine.png", "loss-vs-loss.png"])
    dmft = [y for label, _, y in drawn["energy-loss-noskips.png"]["lines"] if label == "DMFT"]
    assert len(dmft) == 2  # in the panel of each width
    for y in dmft:
        np.testing.assert_allclose(y, 0.6 - 0.01 * np.arange(3))
    lines = {label: (x, y) for label, x, y in drawn["gap-vs-theory.png"]["lines"]
             if not label.startswith("_")}
    x, y = lines["measured (seed mean)"]
    np.testing.assert_allclose(y, 4 / x)
    x, y = lines[r"theory $E[s - 1]$"]
    np.testing.assert_allclose(y, 3 / x)


def test_a_run_with_missing_cells_plots_the_cells_it_has(tmp_path, drawn):
    run_dir = write_run(tmp_path, "toy", toy_cell, widths=(4, 8, 16), steps=3, seeds=(0,), skips=(False,),
                        data_seed=0, dmft=False)
    (run_dir / "cells" / "noskips-H4-g1-N8-seed0.json").unlink()
    with pytest.warns(UserWarning, match="1 cells .* are not finished"):
        paths = plots.plot_run(run_dir, out_dir=tmp_path / "figures")
    assert_pngs(paths, ["gap-over-training.png", "gap-vs-theory.png", "energy-loss-noskips.png", "ratios.png",
                        "cosine.png", "loss-vs-loss.png"])
    measured = [x for label, x, _ in drawn["gap-vs-theory.png"]["lines"] if label == "measured (seed mean)"]
    np.testing.assert_array_equal(measured[0], [4, 16])  # N = 8 is missing
    panels = [label for label, _, _ in drawn["energy-loss-noskips.png"]["lines"] if label == "F*"]
    assert len(panels) == 2


def resnet_cell(config, cell):
    c = cell.settings["width"]
    trace = synthetic_trace(config.steps, 10, cosine_lockstep=np.full(config.steps, 1 - 1 / c))
    sweep = list(config.iteration_sweep)
    info = {"dataset": "synthetic", "solver": "GradientDescent", "tracked_layers": [0, 3, 6, 9],
            "layer_labels": ["Conv1", "Conv2", "Conv3", "Readout"], "plot_width": 9 * c,
            "iteration_sweep": sweep, "cosine_vs_iterations": [1 - 1 / (c * b) for b in sweep]}
    return ex.CellResult(cell, trace, info, 0.0)


def test_resnet_cnn_figures(tmp_path, drawn):
    run_dir = write_run(tmp_path, "resnet-cnn", resnet_cell, widths=(2, 8), steps=3,
                        iteration_sweep=(10, 100))
    paths = plots.plot_run(run_dir, out_dir=tmp_path / "figures")
    assert_pngs(paths, ["cosine.png", "layer-cosine.png", "layer-cosine-profile.png", "energy-loss.png",
                        "inference.png", "cosine-vs-iterations.png"])
    sweep = {label: y for label, _, y in drawn["cosine-vs-iterations.png"]["lines"]}
    np.testing.assert_allclose(sweep["N = 9C = 72"], [1 - 1 / 80, 1 - 1 / 800])
    narrow = [label for label, _, _ in drawn["layer-cosine.png"]["lines"] if label == "N = 9C = 18"]
    assert len(narrow) == 4  # one panel per tracked layer


def inference_cell(config, cell):
    closed = cell.settings["mode"] == "closed-form"
    trace = synthetic_trace(config.steps, cell.settings["hidden_layers"] + 1,
                            closed_form_error=np.full(config.steps, np.nan if closed else 1e-6),
                            converged=np.arange(config.steps) % 2 == 0)
    return ex.CellResult(cell, trace, {"dataset": "toy", "depth": cell.settings["hidden_layers"] + 1}, 0.0)


def test_inference_convergence_figures(tmp_path, drawn):
    run_dir = write_run(tmp_path, "inference-convergence", inference_cell, hidden_layers=(1,), steps=4,
                        parameterisations=("mupc",), modes=("closed-form", "tolerance"))
    paths = plots.plot_run(run_dir, out_dir=tmp_path / "figures")
    assert_pngs(paths, ["energies.png", "energy-error.png", "inference-steps.png", "residuals.png",
                        "losses.png", "cosines.png"])
    errors = [label for label, _, _ in drawn["energy-error.png"]["lines"] if not label.startswith("_")]
    assert errors == ["GD to tolerance"]  # the closed form has no error to show
    unconverged = [x for label, x, _ in drawn["residuals.png"]["lines"] if label.startswith("_") and len(x)]
    np.testing.assert_array_equal(unconverged[0], [1.0, 3.0])  # × at the unconverged steps


def coord_cell(config, cell):
    sizes, steps, layers = list(config.widths), config.steps, config.hidden_layers
    scale = 1.0 if cell.settings["parameterisation"] == "mupc" else 2.0

    def per_size(rows):
        return [np.full((rows, layers), scale * (1 + i)).tolist() for i in range(len(sizes))]

    record = {"sizes": sizes, "steps": steps, "converged": [1.0] * len(sizes),
              "activation": per_size(steps + 1), "error": per_size(steps), "update": per_size(steps),
              "own_update": per_size(steps),
              "output": [[1.0] * (steps + 1)] * len(sizes), "output_update": [[1.0] * steps] * len(sizes)}
    return ex.CellResult(cell, None, {"dataset": "synthetic", "coord_check": record}, 0.0)


def test_coord_check_run_draws_a_figure_per_parameterisation(tmp_path):
    run_dir = write_run(tmp_path, "coord-check", coord_cell, widths=(8, 16), hidden_layers=2, steps=1,
                        parameterisations=("sp",))
    paths = plots.plot_run(run_dir, out_dir=tmp_path / "figures")
    assert_pngs(paths, ["coord-check-sp.png"])


def training_cell(config, cell):
    n = cell.settings["width"]
    trace = synthetic_trace(config.steps, 4, cosine_lockstep=np.full(config.steps, 1 - 1 / n),
                            converged=np.arange(config.steps) > 0)
    info = {"dataset": "synthetic", "solver": "GradientDescent", "tracked_layers": [0, 1, 3],
            "layer_labels": ["first", "second", "last"], "per_token": True}
    return ex.CellResult(cell, trace, info, 0.0)


TRAINING_FIGURES = ["cosine.png", "layer-cosine.png", "layer-cosine-profile.png", "energy-loss.png",
                    "inference.png"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "make_cell", "config", "figures"), [
    ("residual-mlp", training_cell, {"widths": (4, 8), "steps": 3}, TRAINING_FIGURES),
    ("transformer", training_cell, {"widths": (4, 8), "steps": 3, "seeds": (0, 2)}, TRAINING_FIGURES),
    ("toy-sp", toy_cell, {"widths": (4, 8), "steps": 3, "seeds": (0,)},
     ["gap-over-training.png", "gap-vs-theory.png", "energy-loss-skips.png", "energy-loss-noskips.png",
      "ratios.png", "cosine.png", "loss-vs-loss.png"]),
    ("gamma0-sweep", toy_cell, {"widths": (8,), "gamma0s": (0.5, 2.0), "steps": 3},
     ["gap-over-training.png", "gap-vs-theory.png", "energy-loss-skips.png", "energy-loss-noskips.png",
      "ratios.png", "cosine.png"]),
    ("saddle", toy_cell, {"widths": (1, 4), "hidden_layers": (1, 3), "skips": (True,), "steps": 5},
     ["gap-over-training.png", "gap-vs-theory.png", "energy-loss-skips.png", "ratios.png", "cosine.png"]),
])
def test_every_other_experiment_draws_its_figures(tmp_path, drawn, name, make_cell, config, figures):
    run_dir = write_run(tmp_path, name, make_cell, **config)
    assert_pngs(plots.plot_run(run_dir, out_dir=tmp_path / "figures"), figures)
    if name == "saddle":  # log time: the curves start at t + 1 = 1
        x = [x for label, x, _ in drawn["cosine.png"]["lines"] if not label.startswith("_")][0]
        np.testing.assert_array_equal(x, np.arange(1, 6))


def test_plot_run_refuses_an_unknown_experiment(tmp_path):
    run_dir = write_run(tmp_path, "toy", toy_cell, widths=(4,), steps=2, seeds=(0,), skips=(False,),
                        data_seed=0, dmft=False)
    run = ex.load_run(run_dir)
    with pytest.raises(ValueError, match="no figures are defined for experiment 'no-such-experiment'"):
        plots.plot_run(dataclasses.replace(run, experiment="no-such-experiment"))
    content = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**content, "experiment": "no-such-experiment"}))
    with pytest.raises(ValueError, match="no-such-experiment"):
        plots.plot_run(run_dir)
    with pytest.raises(TypeError, match="`run_dir` must be"):
        plots.plot_run(3)
