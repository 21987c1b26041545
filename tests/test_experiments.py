"""The experiments runner: per-step metrics checked against independent computations,
the paper's trends on the quick presets, resume, bad input, results files."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pcscale as pc
from pcscale import experiments as ex
from pcscale.experiments._config import to_dict
from pcscale.experiments._trace import PER_LAYER, SCALARS

# Small settings per experiment for the default run: every experiment end to end in a
# few seconds each (the full quick presets run with -m slow).
SMALL = {
    "width-depth-linear": ["widths=4,16", "hidden_layers=1,2", "steps=3", "batch=8"],  # slow only: see below
    "toy": ["widths=8,32", "steps=3", "seeds=0"],
    "toy-sp": ["widths=8,32", "steps=3", "skips=false"],
    "gamma0-sweep": ["widths=16", "gamma0s=0.5,1", "steps=3", "skips=false"],  # slow only (toy's runner)
    "saddle": ["widths=1,2", "hidden_layers=1", "steps=4", "skips=true"],  # slow only (toy's runner)
    "inference-convergence": ["width=16", "hidden_layers=1", "steps=2", "parameterisations=mupc",
                              "max_inference_steps=500"],
    "residual-mlp": ["widths=8", "hidden_layers=2", "steps=2", "batch=8", "max_inference_steps=200"],
    "resnet-cnn": ["widths=2", "steps=2", "batch=4", "dataset=digits", "max_inference_steps=20",
                   "iteration_sweep=5"],
    "transformer": ["widths=8", "steps=2", "batch=4", "seq_len=8", "n_blocks=1", "max_inference_steps=50"],
    "coord-check": ["widths=16,32", "hidden_layers=2", "steps=1", "batch=8", "parameterisations=mupc"],
}


def _cell_files(out):
    return sorted((out / "cells").glob("*.json"))


def _check_results_files(out, run):
    """Every results file holds every metric of the issue, one value per step, and the
    run folder holds the resolved config, versions and device."""
    saved = json.loads((out / "run.json").read_text())
    assert saved["experiment"] == run.experiment
    assert saved["config"] == to_dict(run.config)
    assert {"jax", "equinox", "optax", "pcscale", "python"} <= set(saved["versions"])
    assert {"platform", "kind", "count"} <= set(saved["device"])
    files = _cell_files(out)
    assert len(files) == len(run.results) > 0
    for path in files:
        content = json.loads(path.read_text())
        if "metrics" not in content:  # DMFT curves and coordinate checks do not train
            continue
        steps = content["steps"]
        assert set(content["metrics"]) == set(SCALARS + PER_LAYER)
        for name in SCALARS:
            assert len(content["metrics"][name]) == steps, name
        for name in PER_LAYER:
            assert np.shape(content["metrics"][name])[0] == steps
        assert set(content["final"]) == {"pc_loss", "bp_loss"}
        assert all(w is not None and w > 0 for w in content["metrics"]["wall_time"])


@pytest.mark.filterwarnings("ignore:inference did not meet")
# width-depth-linear's full quick run and a toy run with its DMFT cell are tested below;
# gamma0-sweep, saddle and toy-sp share toy's runner and differ only in presets (their
# own runs are in the slow set).
@pytest.mark.parametrize("name", sorted(set(SMALL) - {"width-depth-linear", "toy", "gamma0-sweep", "saddle", "toy-sp"}))
def test_every_experiment_runs_end_to_end_and_writes_every_metric(name, tmp_path, data_root):
    run = ex.run(name, "quick", tmp_path / name, overrides=SMALL[name], progress=False)
    assert not run.missing and len(run.computed) == len(ex.get(name).cells(run.config))
    _check_results_files(tmp_path / name, run)
    if name == "residual-mlp":  # no S for a nonlinear network: stored as null, read back as NaN
        content = json.loads(_cell_files(tmp_path / name)[0].read_text())
        assert content["metrics"]["spectral_gap"] == [None] * content["steps"]
        assert np.isnan(ex.load_run(tmp_path / name).results[0].trace.spectral_gap).all()
    table = ex.get(name).summarise(run.config, run.results)
    assert name in table
    reread = ex.load_run(tmp_path / name)
    assert [r.cell.name for r in reread.results] == [r.cell.name for r in run.results]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_quick_preset_runs_end_to_end(name, tmp_path, data_root):
    run = ex.run(name, "quick", tmp_path / name, progress=False)
    _check_results_files(tmp_path / name, run)


# ----------------------------------------------------------------- lockstep maths


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_array))])


def _layer_flat(tree, index):
    return _flat(tree.layers[index])


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_lockstep_metrics_match_numerical_inference_and_plain_grad():
    """Closed-form lockstep training of a linear network, step by step, against an
    independent computation: the PC gradient from numerical inference (CG to 1e-12),
    the BP gradient from jax.grad of the feedforward loss, and the same optax updates
    applied by hand to both twins."""
    key_model, key_x, key_y = jax.random.split(jax.random.PRNGKey(3), 3)
    model = pc.nn.residual_mlp(5, 6, 2, 4, parameterisation=pc.MuPC(), activation="linear",
                               dtype=jnp.float64, key=key_model)
    x = jax.random.normal(key_x, (7, 5), jnp.float64)
    y = jax.random.normal(key_y, (7, 2), jnp.float64)
    optimiser = pc.make_optimiser(model, pc.SGD(0.5))
    steps = 3
    trace = ex.train_lockstep(model, x, y, optimiser=optimiser, inference=ex.ClosedForm(), steps=steps)

    def loss(m):
        prediction = m(x)
        return 0.5 * jnp.mean(jnp.sum((y - prediction) ** 2, axis=-1))

    solver = pc.ConjugateGradient(rtol=1e-12, max_steps=1000)
    pc_model, bp_model = model, model
    pc_state = bp_state = optimiser.init(eqx.filter(model, eqx.is_array))
    for t in range(steps):
        solution = pc.infer(pc_model, x, y, solver=solver)
        energy, pc_grads = pc.pc_gradients(pc_model, solution.activities, x, y)
        lockstep_grads = eqx.filter_grad(loss)(pc_model)
        bp_value, bp_grads = eqx.filter_value_and_grad(loss)(bp_model)
        np.testing.assert_allclose(trace.pc_energy[t], energy, rtol=1e-9)
        np.testing.assert_allclose(trace.pc_loss[t], loss(pc_model), rtol=1e-12)
        np.testing.assert_allclose(trace.bp_loss[t], bp_value, rtol=1e-12)
        np.testing.assert_allclose(trace.energy_loss_ratio[t], energy / loss(pc_model), rtol=1e-9)
        g_pc, g_lock, g_bp = _flat(pc_grads), _flat(lockstep_grads), _flat(bp_grads)
        np.testing.assert_allclose(trace.cosine_lockstep[t], _cos(g_pc, g_lock), rtol=1e-9)
        np.testing.assert_allclose(trace.cosine_trajectory[t], _cos(g_pc, g_bp), rtol=1e-9)
        np.testing.assert_allclose(trace.norm_ratio_lockstep[t], np.linalg.norm(g_pc) / np.linalg.norm(g_lock),
                                   rtol=1e-9)
        for layer in range(4):
            a, b = _layer_flat(pc_grads, layer), _layer_flat(lockstep_grads, layer)
            np.testing.assert_allclose(trace.layer_cosine_lockstep[t, layer], _cos(a, b), rtol=1e-8)
        # S − I at θ_t from the dense activity solution: s-gap ≥ 0 and F* ≤ 𝓛 (λ = 1).
        assert trace.trace_gap[t] > 0 and trace.pc_energy[t] <= trace.pc_loss[t]
        params = eqx.filter(pc_model, eqx.is_array)
        updates, pc_state = optimiser.update(eqx.filter(pc_grads, eqx.is_array), pc_state, params)
        pc_model = eqx.apply_updates(pc_model, updates)
        updates, bp_state = optimiser.update(eqx.filter(bp_grads, eqx.is_array), bp_state,
                                             eqx.filter(bp_model, eqx.is_array))
        bp_model = eqx.apply_updates(bp_model, updates)
    np.testing.assert_allclose(trace.final_pc_loss, loss(pc_model), rtol=1e-10)
    np.testing.assert_allclose(trace.final_bp_loss, loss(bp_model), rtol=1e-10)
    assert trace.converged.all() and (trace.inference_steps == 0).all()
    assert trace.pc_updated.all() and trace.bp_updated.all()


def test_trace_gap_is_the_dense_rescaling():
    """tr(S − I)/d_y and ‖S‖₂ − 1 at t = 0 from a dense S = I + Σ_l G_l G_lᵀ, where G_l
    is the Jacobian of the output with respect to the activity of layer l (λ = 1)."""
    key_model, key_x, key_y = jax.random.split(jax.random.PRNGKey(4), 3)
    model = pc.nn.mlp(3, 5, 2, 4, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                      key=key_model)
    x = jax.random.normal(key_x, (4, 3), jnp.float64)
    y = jax.random.normal(key_y, (4, 2), jnp.float64)
    trace = ex.train_lockstep(model, x, y, optimiser=pc.make_optimiser(model, pc.SGD(0.1)),
                              inference=ex.ClosedForm(), steps=1)

    def output_from(layer, z):
        for later in model.layers[layer + 1:]:
            z = later(z)
        return z

    s = np.eye(2)
    z = x[0]
    for layer in range(len(model.layers) - 1):
        z = model.layers[layer](z)
        g = np.asarray(jax.jacfwd(lambda v, layer=layer: output_from(layer, v))(z))
        s += g @ g.T
    np.testing.assert_allclose(trace.trace_gap[0], np.trace(s - np.eye(2)) / 2, rtol=1e-10)
    np.testing.assert_allclose(trace.spectral_gap[0], np.linalg.eigvalsh(s)[-1] - 1, rtol=1e-10)


def test_numerical_mode_is_checked_against_the_closed_form():
    """With theory=True, |F − F*|/F* and cos(∇F, ∇F*) compare the numerical solve with
    the exact equilibrium: small for a converged solve, large for a budget of one step."""
    key_model, key_x = jax.random.split(jax.random.PRNGKey(5))
    model = pc.nn.mlp(4, 8, 1, 3, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                      key=key_model)
    x = jax.random.normal(key_x, (6, 4), jnp.float64)
    y = jnp.sign(x[:, :1])
    optimiser = pc.make_optimiser(model, pc.SGD(0.05))
    good = ex.train_lockstep(model, x, y, optimiser=optimiser, steps=2, theory=True,
                             inference=pc.ConjugateGradient(rtol=1e-12, max_steps=200))
    exact = ex.train_lockstep(model, x, y, optimiser=optimiser, steps=2, inference=ex.ClosedForm())
    assert good.converged.all() and np.all(good.closed_form_error < 1e-10)
    np.testing.assert_allclose(good.closed_form_energy, exact.pc_energy, rtol=1e-10)
    np.testing.assert_allclose(good.closed_form_cosine, 1.0, atol=1e-10)
    crude = ex.train_lockstep(model, x, y, optimiser=optimiser, steps=1, theory=True,
                              inference=pc.GradientDescent(step_size=0.1, rtol=0.0, max_steps=1))
    assert not crude.converged[0] and crude.inference_steps[0] == 1
    assert crude.closed_form_error[0] > 1e-3 and crude.closed_form_cosine[0] < 0.999


def test_diverged_inference_refuses_the_pc_update_and_records_it():
    key_model, key_x = jax.random.split(jax.random.PRNGKey(6))
    model = pc.nn.residual_mlp(4, 8, 2, 4, parameterisation=pc.MuPC(), key=key_model)
    x = jax.random.normal(key_x, (5, 4))
    y = jax.nn.one_hot(jnp.arange(5) % 2, 2)
    with pytest.warns(UserWarning, match="training failed at step 0: the PC update was refused because "
                                         "inference diverged"):
        trace = ex.train_lockstep(model, x, y, optimiser=pc.make_optimiser(model, pc.Adam(1e-3)), steps=2,
                                  inference=pc.GradientDescent(step_size=1e3, rtol=1e-6, max_steps=100))
    assert trace.result[0] == 3 and not trace.pc_updated[0] and trace.bp_updated[0]
    # A refused update fails the cell (the policy pcscale.train shares), which stops there:
    # the PC model never moved, so its final loss is the loss at θ_0.
    assert trace.failed and trace.failure.step == 0 and np.isnan(trace.pc_loss[1])
    assert trace.final_pc_loss == pytest.approx(trace.pc_loss[0], rel=1e-6)


def test_memory_is_flat_in_the_number_of_steps():
    """The device memory held during training (every live JAX array) does not grow with
    the number of steps: no gradient or activity is kept after its step."""
    key_model, key_x = jax.random.split(jax.random.PRNGKey(7))
    model = pc.nn.residual_mlp(16, 256, 4, 4, parameterisation=pc.MuPC(), activation="linear",
                               dtype=jnp.float64, key=key_model)
    x = jax.random.normal(key_x, (8, 16), jnp.float64)
    y = jnp.ones((8, 4), jnp.float64)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))

    def peak(steps):
        samples = []
        ex.train_lockstep(model, x, y, optimiser=optimiser, inference=ex.ClosedForm(), steps=steps,
                          on_step=lambda t: samples.append(sum(a.nbytes for a in jax.live_arrays())))
        return samples

    short, long = peak(3), peak(30)
    one_model = sum(leaf.nbytes for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    # A run that kept each step's gradient would hold 27 more models' worth at the end.
    assert max(long) <= max(short) + one_model / 2
    assert long[-1] <= long[2] + one_model / 2


# ----------------------------------------------------------------- the paper's trends


# A trend over a sweep of sizes, compiling a model per size: -m slow. The default run
# still runs every experiment end to end and pins cells' numbers (tests/test_pinned.py).
@pytest.mark.slow
def test_width_depth_linear_quick_shows_the_papers_trend(tmp_path, data_root):
    # The trend is read at t = 0, so two steps at the shallowest and deepest depths suffice.
    run = ex.run("width-depth-linear", "quick", tmp_path / "wdl", progress=False,
                 overrides=("widths=4,64,256", "hidden_layers=1,7", "steps=2"))
    _check_results_files(tmp_path / "wdl", run)
    config = run.config
    cosine = {(r.cell.settings["hidden_layers"], r.cell.settings["width"]): r.trace.cosine_lockstep[0]
              for r in run.results}
    for h in config.hidden_layers:
        column = [cosine[(h, n)] for n in config.widths]
        assert all(b >= a - 0.02 for a, b in zip(column, column[1:])), (h, column)
        assert column[-1] > 0.99, (h, column)
    # ‖S‖ − 1 ∝ L/N: the measured trace gap follows the closed-form expectation.
    for r in run.results:
        if r.cell.settings["width"] >= 64:
            np.testing.assert_allclose(r.trace.trace_gap[0], r.info["theory_trace_gap"], rtol=0.35)


def _seed_mean(results, skips, width, field):
    return np.mean([getattr(r.trace, field) for r in results
                    if r.trace is not None and r.cell.settings["skips"] == skips
                    and r.cell.settings["width"] == width], axis=0)


def _max_gap(a, b):
    return float(np.max(np.abs(a / b - 1)))


# A trend over a sweep of sizes, compiling a model per size: -m slow. The default run
# still runs every experiment end to end and pins cells' numbers (tests/test_pinned.py).
@pytest.mark.slow
def test_toy_energy_loss_and_dmft_approach_each_other_with_width(tmp_path):
    run = ex.run("toy", "quick", tmp_path / "toy", overrides=["widths=32,512", "skips=false", "steps=20"],
                 progress=False)
    _check_results_files(tmp_path / "toy", run)
    dmft = next(np.asarray(r.info["dmft_loss"]) for r in run.results if r.trace is None)
    gaps = {}
    for n in (32, 512):
        energy = _seed_mean(run.results, False, n, "pc_energy")
        bp = _seed_mean(run.results, False, n, "bp_loss")
        gaps[n] = (_max_gap(energy, dmft), _max_gap(bp, dmft), _max_gap(energy, bp))
    assert all(wide < narrow for wide, narrow in zip(gaps[512], gaps[32])), gaps
    assert max(gaps[512]) < 0.05, gaps


@pytest.mark.slow
def test_toy_quick_agrees_with_dmft_within_two_percent_at_the_widest_width(tmp_path):
    run = ex.run("toy", "quick", tmp_path / "toy", overrides=["skips=false"], progress=False)
    widest = max(run.config.widths)
    dmft = next(np.asarray(r.info["dmft_loss"]) for r in run.results if r.trace is None)
    energy = _seed_mean(run.results, False, widest, "pc_energy")
    bp = _seed_mean(run.results, False, widest, "bp_loss")
    assert _max_gap(energy, dmft) < 0.02 and _max_gap(bp, dmft) < 0.02 and _max_gap(energy, bp) < 0.02


# A trend over a sweep of sizes, compiling a model per size: -m slow. The default run
# still runs every experiment end to end and pins cells' numbers (tests/test_pinned.py).
@pytest.mark.slow
def test_toy_sp_gap_does_not_shrink_with_width(tmp_path):
    run = ex.run("toy-sp", "quick", tmp_path / "sp", overrides=["widths=8,512", "steps=1"], progress=False)
    for skips, theory in ((False, (1 - 3.0**-4) / 2), (True, (4 / 3) ** 4 - 1)):
        gaps = {r.cell.settings["width"]: r.trace.spectral_gap[0] for r in run.results
                if r.cell.settings["skips"] == skips}
        assert gaps[512] > 0.5 * gaps[8]
        np.testing.assert_allclose(gaps[512], theory, rtol=0.25)  # §4.5: 0.49 and 2.2 at L = 5


# ----------------------------------------------------------------- runner behaviour


def test_an_interrupted_sweep_resumes_without_recomputing_finished_cells(tmp_path, monkeypatch):
    experiment = ex.get("toy")
    calls = []
    original = experiment.run_cell

    def interrupted(config, cell, progress):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third cell
        calls.append(cell.name)
        return original(config, cell, progress)

    overrides = ["widths=4,8,16", "skips=false", "steps=3", "dmft=false", "seeds=0"]
    monkeypatch.setitem(ex.EXPERIMENTS, "toy", dataclasses.replace(experiment, run_cell=interrupted))
    with pytest.raises(KeyboardInterrupt):
        ex.run("toy", "quick", tmp_path / "run", overrides=overrides, progress=False)
    finished = {p.name: p.read_bytes() for p in _cell_files(tmp_path / "run")}
    assert sorted(finished) == sorted(f"{name}.json" for name in calls)
    assert not list((tmp_path / "run" / "cells").glob(".partial-*"))  # nothing half-written

    calls.clear()
    monkeypatch.setitem(ex.EXPERIMENTS, "toy", dataclasses.replace(experiment, run_cell=lambda c, cell, p: (
        calls.append(cell.name), original(c, cell, p))[1]))
    run = ex.run("toy", "quick", tmp_path / "run", overrides=overrides, progress=False)
    assert calls == ["noskips-H4-g1-N16-seed0"] and len(run.reused) == 2
    assert {p.name: p.read_bytes() for p in _cell_files(tmp_path / "run") if p.name in finished} == finished
    assert len(run.results) == 3 and not ex.load_run(tmp_path / "run").missing
    for r in run.results:
        assert r.trace.steps == 3 and np.isfinite(r.trace.cosine_trajectory).all()


def test_a_folder_with_another_config_is_refused_unless_forced(tmp_path):
    out = tmp_path / "run"
    small = ["widths=4", "skips=false", "seeds=0", "steps=2", "dmft=false"]
    ex.run("toy", "quick", out, overrides=small, progress=False)
    with pytest.raises(ex.ConfigMismatch, match="(?s)another config.*steps: 2 → 3.*--force"):
        ex.run("toy", "quick", out, overrides=small[:-2] + ["steps=3", "dmft=false"], progress=False)
    with pytest.raises(ex.ConfigMismatch, match="another config"):
        ex.run("toy-sp", "quick", out, overrides=small, progress=False)
    run = ex.run("toy", "quick", out, overrides=small[:-2] + ["steps=3", "dmft=false"], force=True,
                 progress=False)
    assert run.results[0].trace.steps == 3 and run.computed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ex.ConfigMismatch, match="not a pcscale run folder"):
        ex.run("toy", "quick", tmp_path / "other", overrides=small, progress=False)


def test_bad_names_keys_and_values_are_rejected_with_the_valid_choices(unchecked):
    with pytest.raises(ValueError, match="unknown experiment 'toys'.*width-depth-linear"):
        ex.run("toys")
    with pytest.raises(ValueError, match="unknown preset 'full'.*quick, paper"):
        ex.run("toy", "full")
    with pytest.raises(ValueError, match="unknown key 'width'.*valid keys: widths"):
        ex.run("toy", overrides=["width=8"])
    with pytest.raises(ValueError, match="`steps` expects an integer, got 'ten'.*Valid keys for toy: widths"):
        ex.run("toy", overrides=["steps=ten"])
    with pytest.raises(ValueError, match="`dmft` expects a boolean.*got 'False!'"):
        ex.run("toy", overrides=["dmft=False!"])
    with pytest.raises(ValueError, match="key=value"):
        ex.run("toy", overrides=["steps"])
    with pytest.raises(ValueError, match="`parameterisation` must be one of"):
        ex.run("residual-mlp", overrides=["parameterisation=mupcc"])
    with pytest.raises(ValueError, match="`widths` must be positive"):
        ex.run("toy", overrides=["widths=0,8"])
    with pytest.raises(TypeError, match="`steps` must be a integer|`steps` must be an integer"):
        dataclasses.replace(ex.get("toy").preset("quick"), steps=2.5)


def test_booleans_are_parsed_as_booleans():
    from pcscale.experiments._config import apply_overrides

    config = ex.get("toy").preset("quick")
    for text, expected in (("False", False), ("false", False), ("0", False), ("TRUE", True), ("1", True)):
        assert apply_overrides(config, [f"dmft={text}"], experiment="toy").dmft is expected
    for text in ("yes", "no", "", "None", "2"):
        with pytest.raises(ValueError, match="expects a boolean"):
            apply_overrides(config, [f"dmft={text}"], experiment="toy")
    with pytest.raises(ValueError, match="finite number.*Valid keys"):
        apply_overrides(config, ["learning_rate=nan"], experiment="toy")
    assert apply_overrides(config, ["skips=False"], experiment="toy").skips == (False,)
    assert apply_overrides(config, ["skips=true,0"], experiment="toy").skips == (True, False)


def test_paper_presets_refuse_missing_data_and_quick_presets_record_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("PCSCALE_DATA", str(tmp_path / "empty"))
    with pytest.raises(pc.data.DatasetMissing, match="paper preset does not substitute data"):
        ex.run("width-depth-linear", "paper", tmp_path / "paper", overrides=["widths=4", "hidden_layers=1",
                                                                              "seeds=0", "steps=1"], progress=False)
    with pytest.warns(UserWarning, match="offline default 'digits'"):
        run = ex.run("width-depth-linear", "quick", tmp_path / "quick",
                     overrides=["widths=4", "hidden_layers=1", "steps=1"], progress=False)
    info = run.results[0].info
    assert info["dataset"] == "digits" and info["substitute_for"] == "mnist" and "digits" in info["fallback_note"]
    from pcscale.experiments import _names

    with pytest.warns(UserWarning, match="shakespeare-excerpt"):
        x, y, text = _names.text_batch("tinyshakespeare", batch=4, seq_len=8, seed=0, data_root="", fallback=True)
    assert "bundled" in text["source"] and text["vocabulary"] == 65 and x.shape == (4, 8)


def test_layer_selection_by_structure():
    from pcscale.experiments import resnet_cnn, transformer

    key = jax.random.PRNGKey(0)
    cnn = pc.nn.resnet(1, 2, 10, image_size=8, n_res=6, key=key)
    layers, labels = resnet_cnn.tracked_layers(cnn)
    assert [type(cnn.layers[i].module).__name__ for i in layers] == ["Conv2d"] * 3 + ["Readout"]
    assert not any(cnn.layers[i].skip for i in layers) and labels[-1] == "Readout"
    lm = pc.nn.transformer(11, 8, 2, 5, max_len=4, key=key)
    layers, labels = transformer.tracked_layers(lm)
    assert layers == [0, 1, 5, 7] and labels == ["Embedding", "Block 1", "Block 5", "LM head"]


def test_each_experiment_applies_its_papers_learning_rate_rule():
    """One update of the optimisers the experiments build, against the closed forms of
    docs/background.md §3.1: μPC GD moves W by η·γ0²·N·g (toy), μPC Adam's first step is
    η/√(N·L)·sign(g) on every layer (width-depth-linear, residual-mlp; ε negligible)."""
    from pcscale.experiments._lockstep import optimiser_for

    width, depth, eta, gamma0 = 16, 5, 0.025, 2.0
    model = pc.nn.mlp(40, width, 1, depth, parameterisation=pc.MuPC(gamma0=gamma0), activation="linear",
                      key=jax.random.PRNGKey(0))
    params = eqx.filter(model, eqx.is_array)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    sgd = optimiser_for(model, pc.SGD(eta))
    updates, _ = sgd.update(grads, sgd.init(params), params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_allclose(u, -eta * gamma0**2 * width * g, rtol=1e-6)
    residual = pc.nn.residual_mlp(40, width, 3, depth, parameterisation=pc.MuPC(), activation="linear",
                                  key=jax.random.PRNGKey(1))
    params = eqx.filter(residual, eqx.is_array)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size + 1), p.shape), params)
    adam = optimiser_for(residual, pc.Adam(1e-3))
    updates, _ = adam.update(grads, adam.init(params), params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_allclose(u, -1e-3 / np.sqrt(width * depth) * np.sign(g), rtol=1e-4)


def test_per_token_scaling_touches_energies_and_losses_only():
    """`loss_scale` (the transformer's 1/T_seq) divides the logged energies and losses,
    not the cosines, norm ratios or F/𝓛: both gradients are of token-summed objectives."""
    key_model, key_x = jax.random.split(jax.random.PRNGKey(8))
    model = pc.nn.transformer(7, 8, 2, 1, max_len=4, key=key_model)
    x = jax.random.randint(key_x, (3, 4), 0, 7)
    y = jax.nn.one_hot((x + 1) % 7, 7)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))
    solver = pc.GradientDescent(step_size=0.4, rtol=1e-5, max_steps=2000)
    plain = ex.train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=2)
    per_token = ex.train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=2, loss_scale=0.25)
    for name in ("pc_energy", "pc_loss", "bp_loss"):
        np.testing.assert_allclose(getattr(per_token, name), 0.25 * getattr(plain, name), rtol=1e-6)
    np.testing.assert_allclose(per_token.final_bp_loss, 0.25 * plain.final_bp_loss, rtol=1e-6)
    for name in ("cosine_lockstep", "norm_ratio_lockstep", "norm_ratio_trajectory", "energy_loss_ratio"):
        np.testing.assert_allclose(getattr(per_token, name), getattr(plain, name), rtol=1e-6)
    # At a converged equilibrium of this small λ = 1 network PC's gradient is of BP's size.
    assert plain.converged.all() and 0.3 < plain.norm_ratio_lockstep[0] < 3
    np.testing.assert_allclose(plain.pc_loss[0], model.loss(x, y), rtol=1e-6)


def test_corrupt_or_foreign_files_are_recomputed_or_refused_clearly(tmp_path):
    out = tmp_path / "run"
    small = ["widths=4,8", "skips=false", "seeds=0", "steps=2", "dmft=false"]
    ex.run("toy", "quick", out, overrides=small, progress=False)
    cells = _cell_files(out)
    cells[0].write_text("[]")  # valid JSON, not a cell
    cells[1].write_text('{"format": "pcscale-cell/1", "metrics": ')  # cut off mid-write by another tool
    run = ex.run("toy", "quick", out, overrides=small, progress=False)
    assert sorted(run.computed) == sorted(p.stem for p in cells) and not run.reused
    (out / "run.json").write_text("{not json")
    with pytest.raises(ex.ConfigMismatch, match="run.json is unreadable.*--force"):
        ex.run("toy", "quick", out, overrides=small, progress=False)
    with pytest.raises(ValueError, match="run.json is unreadable"):
        ex.load_run(out)
    run = ex.run("toy", "quick", out, overrides=small, force=True, progress=False)
    assert len(run.results) == 2
    with pytest.raises(ValueError, match="same name.*widths=8,8"):
        ex.run("toy", "quick", tmp_path / "dup", overrides=["widths=8,8", "steps=1"], progress=False)
