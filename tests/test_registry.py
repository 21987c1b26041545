"""The one experiment registry: each experiment declares its config, cells, summary and
figures; the names of configs and of the command line come from one dictionary per
kind; and a library run never changes JAX's process-wide 64-bit flag."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pcscale as pc
from pcscale import cli, experiments as ex
from pcscale.experiments import _names
from pcscale.experiments._config import config_fields
from pcscale.experiments._registry import _registry

SRC = str(Path(pc.__file__).resolve().parents[1])


def _python(script: str, *args: str, devices: int = 1) -> str:
    """Run `script` in a fresh interpreter (JAX's 64-bit mode off, as in any program
    that has not asked for it) and return what it printed."""
    env = {**os.environ, "PYTHONPATH": SRC,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_ENABLE_X64": "0"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# ---------------------------------------------------------------- figures


def draw_nothing(run, out_dir):
    """A drawing function for the tests: names the cells it was given."""
    return [Path(out_dir) / f"{result.cell.name}.png" for result in run.results]


def test_every_experiment_declares_figures_that_resolve():
    pytest.importorskip("matplotlib")
    from pcscale.plots import _run

    for name, experiment in ex.EXPERIMENTS.items():
        assert experiment.figures, f"{name} declares no figures"
        for figure in experiment.figures:
            assert callable(_run.resolve_figure(figure)), figure
    table = _run.figures()
    assert set(table) == set(ex.EXPERIMENTS)
    assert table["toy-sp"] == table["saddle"] == (_run.resolve_figure("pcscale.plots._toy:plot_toy_family"),)


def test_plot_run_draws_what_the_registry_declares(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from pcscale import plots

    experiment = ex.get("toy")
    fake = dataclasses.replace(experiment, figures=(f"{__name__}:draw_nothing", f"{__name__}:draw_nothing"),
                               run_cell=lambda config, cell, context: ex.CellResult(cell, None, {}, 0.0))
    monkeypatch.setitem(ex.EXPERIMENTS, "toy", fake)
    config = dataclasses.replace(experiment.preset("quick"), widths=(4,), seeds=(0,), skips=(False,), dmft=False)
    run = ex.run_experiment(fake, config, tmp_path / "run", progress=False)
    names = [path.name for path in plots.plot_run(run, out_dir=tmp_path / "figures")]
    assert names == ["noskips-H4-g1-N4-seed0.png"] * 2
    monkeypatch.setitem(ex.EXPERIMENTS, "toy", dataclasses.replace(fake, figures=()))
    with pytest.raises(ValueError, match="no figures are defined for experiment 'toy'"):
        plots.plot_run(run)


def test_figure_names_are_checked_when_declared_and_when_resolved(unchecked):
    pytest.importorskip("matplotlib")
    from pcscale.plots import _run

    experiment = ex.get("residual-mlp")
    with pytest.raises(ValueError, match="names 'plot_training', which is not \"module:function\""):
        dataclasses.replace(experiment, figures=("plot_training",))
    with pytest.raises(TypeError, match="must be a tuple"):
        dataclasses.replace(experiment, figures="pcscale.plots._training:plot_training")
    with pytest.raises(TypeError, match="preset 'quick' of experiment 'residual-mlp' must be a ResidualMLPConfig"):
        dataclasses.replace(experiment, presets={"quick": ex.get("toy").preset("quick")})
    with pytest.raises(TypeError, match="names 'nothing_here', which module 'pcscale.plots._run' does not"):
        _run.resolve_figure("pcscale.plots._run:nothing_here")
    with pytest.raises(ValueError, match="names the module 'pcscale.plots._absent', which does not exist"):
        _run.resolve_figure("pcscale.plots._absent:draw")


def test_the_registry_refuses_two_experiments_of_one_name():
    toy = ex.get("toy")
    with pytest.raises(ValueError, match="two experiments are named 'toy'"):
        _registry([toy, ex.get("saddle"), toy])
    assert list(_registry([toy])) == ["toy"]


def test_the_experiments_never_import_the_plotting_code():
    printed = _python("""
        import sys
        import pcscale.experiments
        print(sorted(name for name in sys.modules if name.startswith(("pcscale.plots", "matplotlib"))))
    """)
    assert printed.strip() == "[]"


# ---------------------------------------------------------------- names


def test_each_kind_of_name_is_one_dictionary_that_configs_and_checks_read():
    assert list(_names.PARAMETERISATIONS) == ["mupc", "completep", "mup", "depthmup", "ntp", "sp"]
    assert _names.MU_FAMILY == ("mupc", "completep", "mup", "depthmup")
    for name in _names.PARAMETERISATIONS:
        assert isinstance(_names.parameterisation(name, gamma0=2.0), pc.AbstractParameterisation)
    assert _names.parameterisation("sp", alpha=1.0).alpha == 1.0
    with pytest.raises(ValueError, match="unknown parameterisation 'mupcc'; choose one of mupc, completep"):
        _names.parameterisation("mupcc")
    residual = config_fields(ex.get("residual-mlp").config_type)
    assert residual["parameterisation"].choices == tuple(_names.PARAMETERISATIONS)
    assert residual["activation"].choices == tuple(_names.ACTIVATIONS) == ("tanh", "relu", "linear", "gelu")
    assert residual["dataset"].choices == tuple(_names.IMAGE_DATASETS)
    assert "shakespeare-excerpt" in _names.TEXT_DATASETS


def test_the_command_line_reads_its_choices_from_the_same_places(capsys):
    assert cli.main(["show-config", "residual-mlp"]) == 0
    printed = capsys.readouterr().out
    assert f"one of {', '.join(_names.PARAMETERISATIONS)})" in printed
    assert f"one of {', '.join(_names.ACTIVATIONS)})" in printed
    with pytest.raises(SystemExit):
        cli.main(["run", "toy", "--parallel", "rows"])
    error = capsys.readouterr().err
    assert all(f"'{mode.value}'" in error for mode in ex.Parallel)


# ---------------------------------------------------------------- 64-bit mode

_SMALL_TOY = ["widths=4,16", "skips=false", "seeds=0", "steps=2", "dmft=false"]

_RUN = """
    import json, sys
    import jax
    from pcscale import experiments as ex

    assert not jax.config.jax_enable_x64
    run = ex.run("toy", "quick", sys.argv[1], overrides=sys.argv[3:], progress=False, devices=int(sys.argv[2]))
    print(json.dumps({"x64_after": bool(jax.config.jax_enable_x64), "computed": len(run.computed),
                      "energy": [r.trace.pc_energy.tolist() for r in run.results]}))
"""


# One device is the two-device case without the worker threads: kept for -m slow.
@pytest.mark.parametrize("devices", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_a_float64_run_from_python_scopes_64_bit_mode_to_the_run(tmp_path, devices):
    """With 64-bit mode off, a float64 config still computes in float64 (the same numbers
    as with the mode on for the whole process, as here), in every worker thread of a
    cell-parallel run, and the process's mode is off again afterwards."""
    printed = json.loads(_python(_RUN, str(tmp_path / "scoped"), str(devices), *_SMALL_TOY, devices=devices))
    assert printed["x64_after"] is False and printed["computed"] == 2
    reference = ex.run("toy", "quick", tmp_path / "global", overrides=_SMALL_TOY, progress=False)
    expected = [r.trace.pc_energy for r in reference.results]
    np.testing.assert_allclose(np.asarray(printed["energy"]), np.asarray(expected), rtol=1e-12)


# Two fresh interpreters (the mode is process-wide): -m slow; the scoped Python run above
# keeps the float64-without-the-flag case in the default run.
@pytest.mark.slow
def test_the_command_line_turns_64_bit_mode_on_at_start_up_only_when_the_run_needs_it(tmp_path):
    script = """
        import sys
        import jax
        from pcscale import cli

        code = cli.main(["run", "toy", "--out", sys.argv[1], "--no-plot", "--no-progress", sys.argv[2],
                         *[arg for item in sys.argv[3:] for arg in ("--set", item)]])
        print(code, jax.config.jax_enable_x64)
    """
    on = _python(script, str(tmp_path / "x64"), "--x64", *_SMALL_TOY)
    off = _python(script, str(tmp_path / "x32"), "--x32", *_SMALL_TOY)
    assert on.splitlines()[-1] == "0 True" and off.splitlines()[-1] == "0 False"
