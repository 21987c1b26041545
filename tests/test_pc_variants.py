"""The `pc-variants` experiment: every method of the PC family trains the same network on
the bundled digits and beats chance on the test split after one epoch; a diverging
method is recorded as a failed cell; resuming recomputes nothing finished."""

import numpy as np
import pytest

from pcscale import experiments as ex

SMALL = ["train_size=384", "test_size=297", "epochs=1", "width=32", "batch=64", "dataset=digits"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants")
    return folder, ex.run("pc-variants", "quick", folder, overrides=SMALL, progress=False)


def test_every_method_beats_chance_after_one_epoch(small_run):
    _, run = small_run
    methods = {r.cell.settings["method"] for r in run.results}
    assert methods == {"bp", "pc", "epc", "ipc", "hybrid", "mcpc", "bpc"}
    assert not run.failed
    # Chance is 0.1 on ten balanced classes; its standard error over 297 test images is 0.017.
    for result in run.results:
        accuracy = result.info["history"]["test_accuracy"][-1]
        assert accuracy > 0.2, (result.cell.name, accuracy)
    by_method = {r.cell.settings["method"]: r.info["history"] for r in run.results}
    # The certified methods certified every step; error coordinates reach the same equilibria as
    # the states, so their weights and accuracy agree with certified PC's.
    for method in ("pc", "epc", "hybrid", "bpc"):
        assert by_method[method]["certified_share"][-1] == 1.0
    assert by_method["epc"]["test_accuracy"][-1] == pytest.approx(by_method["pc"]["test_accuracy"][-1], abs=0.02)
    summary = ex.summary(run)
    rows = [line.split() for line in summary.splitlines()]
    for method in methods:  # one table row per method, with its accuracy and status
        row = next(r for r in rows if r and r[0] == method)
        assert float(row[1]) == pytest.approx(by_method[method]["test_accuracy"][-1], abs=1e-4)
        assert row[-1] == "ok"
    best = max((m for m in by_method if m != "bp"), key=lambda m: by_method[m]["test_accuracy"][-1])
    assert f"Best of the PC family here: {best}" in summary


def test_resuming_recomputes_nothing_finished(small_run):
    folder, first = small_run
    again = ex.run("pc-variants", "quick", folder, overrides=SMALL, progress=False)
    for a, b in zip(sorted(first.results, key=lambda r: r.cell.name), sorted(again.results, key=lambda r: r.cell.name),
                    strict=True):
        assert a.info["history"] == b.info["history"]
        assert a.wall_time == b.wall_time


def test_a_diverging_method_is_a_failed_cell(tmp_path):
    run = ex.run("pc-variants", "quick", tmp_path, progress=False,
                 overrides=SMALL + ["methods=ipc", "step_size=1000"])
    assert [r.cell.name for r in run.failed] == ["ipc"]
    assert "diverged" in str(run.failed[0].failure)
    assert "FAILED" in ex.summary(run)
    assert np.isfinite(run.results[0].info["history"]["test_accuracy"][-1])


def test_the_figure_is_drawn_from_the_run(small_run):
    pytest.importorskip("matplotlib")
    from pcscale.plots import plot_run

    folder, _ = small_run
    paths = plot_run(folder, out_dir=folder / "figures")
    assert [p.name for p in paths] == ["variants.png"]
    assert paths[0].stat().st_size > 10_000


def test_every_parameterisation_trains(tmp_path):
    """The variants are built from the parameterised builders: under SP too, one epoch
    of certified PC and of ePC beats chance."""
    run = ex.run("pc-variants", "quick", tmp_path, progress=False,
                 overrides=SMALL + ["methods=pc,epc", "parameterisation=sp", "learning_rate=0.003"])
    assert not run.failed
    for result in run.results:
        assert result.info["history"]["test_accuracy"][-1] > 0.2
