"""The fast start of `pcscale --help`, `list` and `show-config`: they read a catalogue
saved in the package instead of importing JAX, so the catalogue must equal what the
live registries give, and those commands must really not import JAX."""

import json
import subprocess
import sys

import pytest

from pcscale import cli
from pcscale.experiments import _catalogue

REFRESH = "refresh it with `python -m pcscale.experiments._catalogue`"


def test_the_saved_catalogue_is_the_live_registries():
    saved = json.loads(_catalogue.PATH.read_text(encoding="utf-8"))
    live = _catalogue.build()
    assert saved.keys() == live.keys()
    assert saved["solvers"] == live["solvers"], REFRESH
    assert saved["parallel"] == live["parallel"], REFRESH
    assert saved["experiments"].keys() == live["experiments"].keys(), REFRESH
    for name, entry in live["experiments"].items():
        assert saved["experiments"][name] == entry, f"{name}: the catalogue is stale; {REFRESH}"


_PROBE = """
import contextlib, io, sys
from pcscale import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = cli.main({argv!r})
    except SystemExit as exit:
        code = exit.code
heavy = sorted(name for name in ("jax", "jaxlib", "equinox", "optax", "numpy") if name in sys.modules)
print(code, ",".join(heavy) or "-")
"""


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["show-config", "toy"],
                                  ["show-config", "transformer", "--preset", "paper"], ["run", "--help"]])
def test_help_list_and_show_config_do_not_import_jax(argv):
    result = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True,
                            check=True)
    code, heavy = result.stdout.split()
    assert code in ("0", "None"), result.stdout
    assert heavy == "-", f"pcscale {' '.join(argv)} imported {heavy}"


def test_list_and_show_config_print_the_live_descriptions(capsys):
    from pcscale.experiments._registry import EXPERIMENTS, describe

    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(EXPERIMENTS)
    for line, experiment in zip(lines, EXPERIMENTS.values(), strict=True):
        assert line.endswith(experiment.description)
    assert cli.main(["show-config", "residual-mlp", "--preset", "paper"]) == 0
    assert capsys.readouterr().out == describe("residual-mlp", "paper") + "\n"


def test_an_unknown_experiment_or_preset_still_gets_the_registrys_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["show-config", "no-such-experiment"])
    assert exit.value.code == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["show-config", "toy", "--preset", "enormous"])
    assert "unknown preset 'enormous'" in capsys.readouterr().err
