"""What identifies a finished cell: the experiment, its config, the cell and the data the
config resolves to. Data that change under a run folder (the dataset placed in the data
root after a run on the offline fallback, or its files replaced) make its cells be
computed again; another config is refused with each differing setting named."""

import dataclasses
import json
import re
import struct

import numpy as np
import pytest

from pcscale import cli, experiments as ex

# The smallest width-depth-linear: two cells of one step each.
SMALL = ["widths=4,8", "hidden_layers=1", "seeds=0", "steps=1", "batch=4"]
CELLS = ["H1-N4-seed0", "H1-N8-seed0"]
SAMPLES = 12


def _write_mnist(root, *, seed=0, samples=SAMPLES):
    """A tiny MNIST training split in the official IDX format (uncompressed), written
    here: big-endian magic (0x0803 images, 0x0801 labels), the sizes, then the bytes.
    Returns the dataset's folder."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (samples, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, samples, dtype=np.uint8)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 0x0803, samples, 28, 28) + images.tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 0x0801, samples) + labels.tobytes())
    return folder


@pytest.fixture
def counted(monkeypatch):
    """The names of the cells width-depth-linear computes (run_cell calls), per run."""
    experiment = ex.get("width-depth-linear")
    calls = []

    def run_cell(config, cell, context):
        calls.append(cell.name)
        return experiment.run_cell(config, cell, context)

    monkeypatch.setitem(ex.EXPERIMENTS, "width-depth-linear", dataclasses.replace(experiment, run_cell=run_cell))
    return calls


def _run(out, overrides=SMALL, **kwargs):
    return ex.run("width-depth-linear", "quick", out, overrides=overrides, progress=False, **kwargs)


def _warning(caught, text):
    return next(str(w.message) for w in caught if text in str(w.message))


def _cell_bytes(out):
    return {path.name: path.read_bytes() for path in sorted((out / "cells").glob("*.json"))}


@pytest.mark.filterwarnings("ignore:.*offline default")
def test_real_data_placed_after_a_fallback_run_recomputes_every_cell(tmp_path, monkeypatch, counted):
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    first = _run(out)
    assert counted == CELLS and first.computed == tuple(CELLS) and not first.reused
    assert {r.info["dataset"] for r in first.results} == {"digits"}

    folder = _write_mnist(root)
    counted.clear()
    with pytest.warns(UserWarning, match="differ from its last session") as caught:
        second = _run(out)
    message = _warning(caught, "differ from its last session")
    assert "data.dataset: digits → mnist" in message
    assert f"data.source: scikit-learn (bundled) → {folder}" in message
    assert "data.samples: 1500 → 12" in message  # the digits' fixed training split, then the files written here
    assert counted == CELLS and second.computed == tuple(CELLS) and not second.reused
    for result in second.results:
        assert result.info["dataset"] == "mnist" and result.info["substitute_for"] is None
        assert result.info["source"] == str(folder) and result.info["image_shape"] == [1, 28, 28]  # digits: 8×8
    saved = json.loads((out / "run.json").read_text())
    assert saved["data"]["dataset"] == "mnist" and saved["data"]["samples"] == SAMPLES
    assert [session["data"]["dataset"] for session in saved["sessions"]] == ["digits", "mnist"]
    loaded = ex.load_run(out)
    assert not loaded.missing and {r.info["dataset"] for r in loaded.results} == {"mnist"}
    for path in (out / "cells").glob("*.json"):
        assert json.loads(path.read_text())["data"]["source"] == str(folder)


def test_an_unchanged_rerun_reuses_every_cell_and_the_cli_says_so(tmp_path, monkeypatch, counted, capsys):
    root, out = tmp_path / "data", tmp_path / "run"
    _write_mnist(root)
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    _run(out)
    before = _cell_bytes(out)
    counted.clear()
    again = _run(out)
    assert counted == [] and again.reused == tuple(CELLS) and not again.computed
    assert _cell_bytes(out) == before
    capsys.readouterr()
    command = ["run", "width-depth-linear", "--out", str(out), "--no-progress", "--no-plot"]
    assert cli.main(command + [arg for item in SMALL for arg in ("--set", item)]) == 0
    assert f"(2 finished cells reused from {out}, 0 computed)" in capsys.readouterr().out
    assert counted == []


def test_replaced_files_recompute_and_a_removed_dataset_falls_back_and_recomputes(tmp_path, monkeypatch, counted):
    root, out = tmp_path / "data", tmp_path / "run"
    folder = _write_mnist(root, seed=0)
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    _run(out)
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    _write_mnist(root, seed=1)  # other pixels and labels, the same sizes and names
    assert {path.name: path.stat().st_size for path in folder.iterdir()} == sizes
    counted.clear()
    with pytest.warns(UserWarning, match="differ from its last session") as caught:
        _run(out)
    assert counted == CELLS
    lines = _warning(caught, "differ from its last session").splitlines()
    assert [line.split(":")[0].strip() for line in lines if line.startswith("  ")] == ["data.fingerprint"]

    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    counted.clear()
    with pytest.warns(UserWarning) as caught:
        run = _run(out)
    assert "offline default 'digits'" in _warning(caught, "offline default")
    assert "data.dataset: mnist → digits" in _warning(caught, "differ from its last session")
    assert counted == CELLS and {r.info["dataset"] for r in run.results} == {"digits"}


def test_another_config_is_refused_naming_each_setting_that_differs(tmp_path, monkeypatch, counted):
    root, out = tmp_path / "data", tmp_path / "run"
    _write_mnist(root)
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    _run(out)
    counted.clear()
    with pytest.raises(ex.ConfigMismatch) as refused:
        _run(out, SMALL[:-2] + ["steps=2", "batch=4", "learning_rate=0.01"])
    message = str(refused.value)
    lines = [line.strip() for line in message.splitlines()[1:-1]]
    assert lines == ["learning_rate: 0.001 → 0.01", "steps: 1 → 2"]  # in the config's field order
    assert "--force" in message and "another --out" in message and counted == []

    # A changed dataset is named twice: the setting asked for, and what it resolves to.
    with pytest.raises(ex.ConfigMismatch) as refused:
        _run(out, SMALL + ["dataset=digits"])
    lines = [line.strip() for line in str(refused.value).splitlines()[1:-1]]
    assert lines[0] == "dataset: mnist → digits"
    assert "data.dataset: mnist → digits" in lines and f"data.source: {root / 'mnist'} → scikit-learn (bundled)" in lines

    experiment = ex.get("width-depth-linear")
    config = dataclasses.replace(experiment.preset("quick"), widths=(4,), hidden_layers=(1,), steps=1, batch=4)
    with pytest.raises(ex.ConfigMismatch, match=re.escape("preset: quick → mine\n  widths: 4,8 → 4\n")):
        ex.run_experiment(experiment, config, out, progress=False, preset="mine")
    with pytest.raises(ex.ConfigMismatch, match=re.escape("\n  experiment: width-depth-linear → toy\n")):
        ex.run("toy", "quick", out, overrides=["widths=4", "steps=1", "dmft=false", "skips=false"], progress=False)

    forced = _run(out, SMALL[:-2] + ["steps=2", "batch=4"], force=True)
    assert counted == CELLS and forced.computed == tuple(CELLS) and forced.results[0].trace.steps == 2


@pytest.mark.filterwarnings("ignore:.*offline default", "ignore:.*differ from its last session")
def test_cells_left_on_the_old_data_are_reused_when_that_data_comes_back(tmp_path, monkeypatch):
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    monkeypatch.setenv("PCSCALE_DATA", str(root))
    experiment = ex.get("width-depth-linear")
    calls = []

    def run_cell(config, cell, context):
        if calls == ["stop"]:
            raise KeyboardInterrupt  # Ctrl-C during the second cell on MNIST
        calls.append(cell.name)
        result = experiment.run_cell(config, cell, context)
        if result.info["dataset"] == "mnist":
            calls[:] = ["stop"]
        return result

    monkeypatch.setitem(ex.EXPERIMENTS, "width-depth-linear", dataclasses.replace(experiment, run_cell=run_cell))
    _run(out)  # on the digits
    on_digits = _cell_bytes(out)
    folder = _write_mnist(root)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        _run(out)
    assert _cell_bytes(out)[f"{CELLS[1]}.json"] == on_digits[f"{CELLS[1]}.json"]  # not reached on MNIST

    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()  # an empty folder is an incomplete dataset, an error rather than a fallback
    calls.clear()
    back = _run(out)
    assert calls == [CELLS[0]] and back.reused == (CELLS[1],) and back.computed == (CELLS[0],)
    assert {r.info["dataset"] for r in back.results} == {"digits"}
