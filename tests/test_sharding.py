"""Data parallelism and cell parallelism (issue 8, docs/scaling.md), on the four CPU
devices conftest.py asks XLA for: a step split over 4 devices must equal the same step
on one device, a cell-parallel sweep must write the files of the serial sweep, and bad
requests must fail with the numbers that explain them."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SOLVER_IDS, all_solvers, annotations_unchecked

import pcscale as pc
from pcscale import cli, experiments as ex

pytestmark = pytest.mark.skipif(
    jax.device_count() < 4, reason="needs 4 devices: XLA_FLAGS=--xla_force_host_platform_device_count=4"
)

TOLERANCE = {jnp.float32: 1e-5, jnp.float64: 1e-10}
BUILDERS = {"mlp": pc.nn.mlp, "residual_mlp": pc.nn.residual_mlp}


def _problem(build, dtype, batch=16, width=32):
    model = BUILDERS[build](6, width, 3, 4, activation="tanh", parameterisation=pc.MuPC(), dtype=dtype,
                           key=jax.random.PRNGKey(0))
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    return model, jax.random.normal(kx, (batch, 6), dtype), jax.random.normal(ky, (batch, 3), dtype)


def _params(model):
    return jax.tree.leaves(eqx.filter(model, eqx.is_array))


def _assert_same_params(a, b, tolerance):
    for left, right in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=tolerance, atol=tolerance)


def _devices_of(array) -> int:
    return len(array.sharding.device_set)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("build", ["mlp", "residual_mlp"])
def test_a_pc_and_a_bp_step_on_four_devices_equal_one_device(build, dtype):
    model, x, y = _problem(build, dtype)
    tolerance = TOLERANCE[dtype]
    optimiser = pc.make_optimiser(model, pc.SGD(0.05))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    solver = pc.GradientDescent(step_size=0.1, rtol=1e-4 if dtype == jnp.float32 else 1e-8)
    mesh = pc.make_data_mesh(4)
    xs, ys = pc.shard_batch((x, y), mesh)
    assert _devices_of(xs) == 4 and xs.sharding.shard_shape(xs.shape) == (4, 6)

    one, _, metrics_one = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    four, _, metrics_four = pc.pc_step(model, state, xs, ys, optimiser=optimiser, solver=solver)
    _assert_same_params(four, one, tolerance)
    assert all(_devices_of(leaf) == 4 for leaf in _params(four))  # replicated on the mesh
    # Inference: the same number of steps, and the same (global) residual. The residual
    # is a gradient norm ~1e-4 of its start, so rounding of the activities moves it by
    # up to 100× the parameters' tolerance in relative terms.
    assert int(metrics_four.inference.steps) == int(metrics_one.inference.steps) > 1
    np.testing.assert_allclose(metrics_four.inference.residual, metrics_one.inference.residual, rtol=100 * tolerance)
    np.testing.assert_allclose(metrics_four.energy, metrics_one.energy, rtol=tolerance)
    assert metrics_four.inference.result == metrics_one.inference.result

    bp_one, _, bp_metrics_one = pc.bp_step(model, state, x, y, optimiser=optimiser)
    bp_four, _, bp_metrics_four = pc.bp_step(model, state, xs, ys, optimiser=optimiser)
    _assert_same_params(bp_four, bp_one, tolerance)
    np.testing.assert_allclose(bp_metrics_four.loss, bp_metrics_one.loss, rtol=tolerance)


def _converging_solvers(model):
    """helpers.all_solvers, with Adam's rate decayed: at a fixed rate it circles the
    equilibrium for ever on this problem, a chaotic orbit that rounding alone moves."""
    import optax

    solvers = all_solvers(model, max_steps=2000, rtol=1e-8)
    solvers["adam"] = pc.OptaxSolver(optax.adam(optax.exponential_decay(0.02, 200, 0.5)), rtol=1e-8, max_steps=2000)
    return solvers


# GD, CG and Newton–Krylov in the default run; the rest of the registry with -m slow.
@pytest.mark.parametrize("name", [
    name if name in ("gd", "cg", "newton") else pytest.param(name, marks=pytest.mark.slow) for name in SOLVER_IDS
])
def test_every_solver_takes_the_same_steps_to_the_same_equilibrium_on_four_devices(name):
    model, x, y = _problem("residual_mlp", jnp.float64, width=16)
    solver = _converging_solvers(model)[name]
    split = pc.infer(model, *pc.shard_batch((x, y), pc.make_data_mesh(4)), solver=solver)
    whole = pc.infer(model, x, y, solver=solver)
    assert whole.stats.result == pc.RESULTS.converged and split.stats.result == whole.stats.result
    assert int(split.stats.steps) == int(whole.stats.steps)
    # The final residual is ~1e-8 of the first: compare it on that scale.
    np.testing.assert_allclose(split.stats.residual, whole.stats.residual, rtol=1e-5,
                               atol=1e-6 * float(whole.stats.initial_residual) * 1e-8)
    for a, b in zip(split.activities, whole.activities, strict=True):
        assert a.sharding.shard_shape(a.shape)[0] == 4
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def _zoo(kind):
    kx, ky, km = jax.random.split(jax.random.PRNGKey(4), 3)
    if kind == "resnet":
        model = pc.nn.resnet(1, 2, 3, image_size=8, n_res=3, parameterisation=pc.MuPC(), dtype=jnp.float64, key=km)
        x = jax.random.normal(kx, (8, 1, 8, 8), jnp.float64)
        y = jax.nn.one_hot(jax.random.randint(ky, (8,), 0, 3), 3, dtype=jnp.float64)
    else:  # integer tokens in, one-hot next tokens out
        model = pc.nn.transformer(5, 8, 2, 1, max_len=6, dtype=jnp.float64, key=km)
        x = jax.random.randint(kx, (8, 6), 0, 5)
        y = jax.nn.one_hot(jax.random.randint(ky, (8, 6), 0, 5), 5, dtype=jnp.float64)
    return model, x, y


# Both with -m slow: the MLP cases above check the data-parallel step in the default run.
@pytest.mark.parametrize("kind", [pytest.param("resnet", marks=pytest.mark.slow),
                                  pytest.param("transformer", marks=pytest.mark.slow)])
def test_the_resnet_and_the_transformer_train_data_parallel_like_one_device(kind):
    """Images and integer tokens split over 4 devices; only x is split by hand here, and
    the step lays y out like it."""
    model, x, y = _zoo(kind)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    solver = pc.ConjugateGradient(rtol=1e-9, max_steps=500)
    xs = pc.shard_batch(x, pc.make_data_mesh(4))
    one, _, metrics_one = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    four, _, metrics_four = pc.pc_step(model, state, xs, y, optimiser=optimiser, solver=solver)
    assert int(metrics_four.inference.steps) == int(metrics_one.inference.steps)
    _assert_same_params(four, one, 1e-10)


def test_a_batch_split_over_one_axis_of_a_two_axis_mesh_counts_that_axis_only():
    """x split over axis "a" (2 devices) of a 2 × 2 mesh: y follows it in 2 parts, so a
    batch of 6 is accepted (6 is not a multiple of the mesh's 4 devices), and the step
    equals the one-device step."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("a", "b"))
    model, x, y = _problem("mlp", jnp.float64, batch=6)
    xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("a")))
    split = pc.infer(model, xs, y, solver=pc.ConjugateGradient(rtol=1e-9))
    whole = pc.infer(model, x, y, solver=pc.ConjugateGradient(rtol=1e-9))
    assert split.activities[0].sharding.shard_shape(split.activities[0].shape)[0] == 3
    assert int(split.stats.steps) == int(whole.stats.steps)
    for a, b in zip(split.activities, whole.activities, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    with annotations_unchecked(), pytest.raises(ValueError, match=r"`y` has batch size 7, which the 2 devices"):
        pc.infer(model, xs, jnp.concatenate([y, y[:1]]), solver=pc.ConjugateGradient())


def test_the_activities_stay_split_over_the_devices_during_inference():
    """The split is real: every activity of the solve lives in four shards of B/4 samples
    (not replicated), and the residual reported is the global one, checked against the
    gradient of the summed energy computed on one device by jax.grad."""
    model, x, y = _problem("residual_mlp", jnp.float64)
    xs, ys = pc.shard_batch((x, y), pc.make_data_mesh(4))
    for solver in (pc.ConjugateGradient(rtol=1e-8),):
        split = pc.infer(model, xs, ys, solver=solver)
        whole = pc.infer(model, x, y, solver=solver)
        for activity in split.activities:
            assert activity.sharding.spec[0] == "batch"
            assert activity.sharding.shard_shape(activity.shape)[0] == 4
        assert int(split.stats.steps) == int(whole.stats.steps)
        for a, b in zip(split.activities, whole.activities, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)

        def summed(z):
            return jnp.sum(jax.vmap(model.energy_one)(z, x, y))

        gradient = jax.grad(summed)(tuple(np.asarray(a) for a in split.activities))
        expected = np.sqrt(sum(float(jnp.sum(g**2)) for g in gradient))
        np.testing.assert_allclose(split.stats.residual, expected, rtol=1e-8)


@pytest.mark.parametrize("dtype", [pytest.param(jnp.float32, marks=pytest.mark.slow), jnp.float64],
                         ids=["float32", "float64"])
def test_training_with_a_mesh_follows_the_one_device_run(dtype):
    model, x, y = _problem("residual_mlp", dtype, width=16)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    solver = pc.ConjugateGradient(rtol=1e-5 if dtype == jnp.float32 else 1e-9)
    one = pc.train(model, (x, y), optimiser=optimiser, solver=solver, steps=2, progress=False)
    four = pc.train(model, (x, y), optimiser=optimiser, solver=solver, steps=2, progress=False,
                    mesh=pc.make_data_mesh(4))
    tolerance = TOLERANCE[dtype]
    # Adam divides by √v, so float32 rounding of the sums is amplified where a gradient
    # component is tiny; 10× the one-step tolerance after 2 steps.
    _assert_same_params(four.pc_model, one.pc_model, 10 * tolerance)
    _assert_same_params(four.bp_model, one.bp_model, 10 * tolerance)
    np.testing.assert_array_equal(four.history.pc.inference.steps, one.history.pc.inference.steps)
    np.testing.assert_allclose(four.history.lockstep.cosine, one.history.lockstep.cosine, atol=10 * tolerance)
    np.testing.assert_allclose(four.final_pc_loss, one.final_pc_loss, rtol=10 * tolerance)


@pytest.mark.parametrize("inference", ["closed_form", "gd"])
def test_lockstep_training_with_a_mesh_equals_one_device(inference):
    linear = inference == "closed_form"
    model = pc.nn.residual_mlp(6, 16, 2, 3, activation="linear" if linear else "tanh", parameterisation=pc.MuPC(),
                               dtype=jnp.float64, key=jax.random.PRNGKey(2))
    kx, ky = jax.random.split(jax.random.PRNGKey(3))
    x, y = jax.random.normal(kx, (8, 6), jnp.float64), jax.random.normal(ky, (8, 2), jnp.float64)
    optimiser = pc.make_optimiser(model, pc.SGD(0.02))
    solver = ex.ClosedForm() if linear else pc.GradientDescent(rtol=1e-8)
    one = ex.train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=3)
    four = ex.train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=3, mesh=pc.make_data_mesh(4))
    for name in ("pc_energy", "pc_loss", "bp_loss", "cosine_lockstep", "cosine_trajectory", "trace_gap",
                 "relative_residual"):
        np.testing.assert_allclose(getattr(four, name), getattr(one, name), rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(four.inference_steps, one.inference_steps)


# -- bad input ------------------------------------------------------------------------


def test_a_batch_the_devices_cannot_share_is_refused_with_the_sizes_that_fit():
    model, x, y = _problem("mlp", jnp.float64, batch=10)
    mesh = pc.make_data_mesh(4)
    with pytest.raises(ValueError, match=r"batch\[0\]` has batch size 10.*4 devices.*multiple of 4 \(e.g. 8 or 12\)"):
        pc.shard_batch((x, y), mesh)
    optimiser = pc.make_optimiser(model, pc.SGD(0.1))
    with pytest.raises(ValueError, match=r"`data\[0\]` has batch size 10.*multiple of 4"):
        pc.train(model, (x, y), optimiser=optimiser, solver=pc.GradientDescent(), steps=1, mesh=mesh,
                 progress=False)
    with pytest.raises(ValueError, match=r"`x` has batch size 10"):
        ex.train_lockstep(model, x, y, optimiser=optimiser, inference=pc.GradientDescent(), steps=1, mesh=mesh)


def test_more_devices_than_exist_and_other_bad_requests_are_refused(unchecked):
    count = jax.device_count()
    with pytest.raises(ValueError, match=rf"`devices={count + 4}`.*sees {count} JAX device.*at most {count}.*"
                                         rf"xla_force_host_platform_device_count={count + 4}"):
        pc.make_data_mesh(count + 4)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        pc.make_data_mesh(0)
    with pytest.raises(TypeError, match="`devices` must be an int"):
        pc.make_data_mesh("4")
    with pytest.raises(ValueError, match="more than once"):
        pc.make_data_mesh([jax.devices()[0], jax.devices()[0]])
    with pytest.raises(TypeError, match="`mesh` must be a jax.sharding.Mesh"):
        pc.shard_batch(np.ones((4, 2)), mesh=4)
    with pytest.raises(ValueError, match=r"batch size 3, .*4 devices.*multiple of 4 \(e.g. 4\)"):
        pc.shard_batch(np.ones((3, 2)), pc.make_data_mesh(4))
    with pytest.raises(TypeError, match=r"jax.Device objects, got int.*jax.devices\(\)\[:2\]"):
        pc.make_data_mesh([0, 1])


def test_the_runner_refuses_bad_device_requests_before_writing_anything(tmp_path, unchecked):
    count = jax.device_count()
    with pytest.raises(ValueError, match=rf"`devices={count + 1}`"):
        ex.run("toy", out_dir=tmp_path / "a", devices=count + 1, progress=False)
    with pytest.raises(TypeError, match="`parallel` must be a pcscale.experiments.Parallel"):
        ex.run("toy", out_dir=tmp_path / "b", devices=2, parallel="cells", progress=False)
    # The toy family's batch is `samples` (20 by default): the message names that key.
    with pytest.raises(ValueError, match=r"`samples=20` cannot be split equally over 3 devices.*--set samples=18"):
        ex.run("toy", out_dir=tmp_path / "c", devices=3, parallel=ex.Parallel.BATCH, progress=False)
    assert not any(tmp_path.iterdir())


def test_the_cli_refuses_bad_device_requests_with_exit_status_2(tmp_path, capsys, data_root):
    count = jax.device_count()
    for argv, message in (
        (["--devices", str(count + 4)], f"sees {count} JAX device"),
        (["--devices", "0"], "expected a positive number of devices or 'all'"),
        (["--devices", "many"], "expected a positive number of devices or 'all'"),
        (["--parallel", "rows"], "invalid choice"),
        (["--process-id", "1"], "need --distributed"),
        (["--devices", "4", "--parallel", "batch", "--set", "batch=6"], "`batch=6` cannot be split equally over 4"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["run", "width-depth-linear", "--out", str(tmp_path / "out"), "--no-progress", "--no-plot",
                      "--set", "widths=4", "--set", "hidden_layers=1", "--set", "steps=1", *argv])
        assert exit_.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


# -- sweeps ---------------------------------------------------------------------------

SWEEP = ["widths=4,8", "hidden_layers=1", "steps=2", "batch=8"]
TIMINGS = {"wall_time"}


def _without_timings(content):
    """A results file without its wall times, the only values that may differ between
    two runs of the same cells."""
    if isinstance(content, dict):
        return {key: _without_timings(value) for key, value in content.items() if key not in TIMINGS}
    if isinstance(content, list):
        return [_without_timings(value) for value in content]
    return content


def _cells(out: Path) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((out / "cells").glob("*.json"))}


SWEEPS = {
    "width-depth-linear": SWEEP,  # closed-form inference
    "residual-mlp": ["widths=8", "hidden_layers=1", "seeds=0,1", "steps=2", "batch=8",  # GD inference
                     "max_inference_steps=50"],
}


@pytest.mark.parametrize("name", ["width-depth-linear", pytest.param("residual-mlp", marks=pytest.mark.slow)])
def test_a_cell_parallel_sweep_writes_the_files_of_the_serial_sweep(name, tmp_path, data_root, monkeypatch):
    import dataclasses
    import threading

    experiment = ex.get(name)
    used, lock = {}, threading.Lock()

    def recording(config, cell, context):
        with lock:  # where JAX puts this cell's arrays
            used[cell.name] = next(iter(jnp.zeros(()).devices()))
        return experiment.run_cell(config, cell, context)

    monkeypatch.setitem(ex.EXPERIMENTS, name, dataclasses.replace(experiment, run_cell=recording))
    overrides = SWEEPS[name]
    serial = ex.run(name, out_dir=tmp_path / "serial", overrides=overrides, progress=False)
    assert set(used.values()) == {jax.devices()[0]}
    used.clear()
    parallel = ex.run(name, out_dir=tmp_path / "cells", overrides=overrides, progress=False, devices=2,
                      parallel=ex.Parallel.CELLS)
    assert len(set(used.values())) > 1  # the cells really ran on several devices
    assert [r.cell.name for r in parallel.results] == [r.cell.name for r in serial.results]
    cells = len(serial.results)
    assert cells >= 2 and len(parallel.computed) == cells
    one, four = _cells(tmp_path / "serial"), _cells(tmp_path / "cells")
    assert one.keys() == four.keys() and len(one) == cells
    for cell in one:
        assert _without_timings(four[cell]) == _without_timings(one[cell]), cell
    # Resume works the same way: nothing left to compute.
    again = ex.run(name, out_dir=tmp_path / "cells", overrides=overrides, progress=False, devices=2)
    assert again.computed == () and len(again.reused) == cells


def test_a_batch_parallel_sweep_matches_the_serial_sweep_up_to_rounding(tmp_path, data_root):
    overrides = ["widths=8", "hidden_layers=1", "steps=2", "batch=8"]
    serial = ex.run("width-depth-linear", out_dir=tmp_path / "serial", overrides=overrides, progress=False)
    split = ex.run("width-depth-linear", out_dir=tmp_path / "batch", overrides=overrides, progress=False, devices=2,
                   parallel=ex.Parallel.BATCH)
    for a, b in zip(serial.results, split.results, strict=True):
        for name in ("pc_energy", "bp_loss", "cosine_lockstep", "cosine_trajectory", "trace_gap"):
            np.testing.assert_allclose(getattr(b.trace, name), getattr(a.trace, name), rtol=1e-9, err_msg=name)


def test_a_failing_cell_stops_the_parallel_sweep_and_keeps_the_finished_cells(tmp_path, monkeypatch):
    import dataclasses
    import threading

    experiment = ex.get("toy")
    original = experiment.run_cell
    failed = threading.Event()

    def flaky(config, cell, context):
        if cell.settings.get("seed") == 1 and not failed.is_set():
            failed.set()
            raise RuntimeError("cell exploded")
        return original(config, cell, context)

    monkeypatch.setitem(ex.EXPERIMENTS, "toy", dataclasses.replace(experiment, run_cell=flaky))
    overrides = ["widths=8", "steps=2", "seeds=0,1,2", "dmft=false", "skips=true"]
    with pytest.raises(RuntimeError, match="cell exploded"):
        ex.run("toy", out_dir=tmp_path, overrides=overrides, progress=False, devices=2)
    # The seed-0 cell was running beside the failing seed-1 one: it finished and was
    # saved; the seed-2 cell never started.
    kept = {path.stem for path in (tmp_path / "cells").glob("*.json")}
    assert kept == {"skips-H4-g1-N8-seed0"}
    assert not [path for path in (tmp_path / "cells").iterdir() if path.suffix != ".json"]
    rerun = ex.run("toy", out_dir=tmp_path, overrides=overrides, progress=False, devices=2)
    assert set(rerun.reused) == kept and len(rerun.results) == 3


# -- several hosts --------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx, jax.numpy as jnp, numpy as np
    import pcscale as pc
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    model = pc.nn.residual_mlp(6, 32, 3, 4, activation="tanh", parameterisation=pc.MuPC(), dtype=jnp.float64,
                               key=jax.random.PRNGKey(0))
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x, y = jax.random.normal(kx, (16, 6), jnp.float64), jax.random.normal(ky, (16, 3), jnp.float64)
    optimiser = pc.make_optimiser(model, pc.SGD(0.05))
    run = pc.train(model, (np.asarray(x), np.asarray(y)), optimiser=optimiser, solver=pc.GradientDescent(rtol=1e-8),
                   steps=3, progress=False, mesh=pc.make_data_mesh())
    # Batches split beforehand (they span both processes) are taken as they are.
    again = pc.train(model, pc.shard_batch((x, y), pc.make_data_mesh()), optimiser=optimiser,
                     solver=pc.GradientDescent(rtol=1e-8), steps=3, progress=False, mesh=pc.make_data_mesh())
    assert float(jnp.max(jnp.abs(again.final_pc_loss - run.final_pc_loss))) < 1e-12
    # Different data on the two processes is refused on both.
    try:
        pc.shard_batch(np.asarray(x) + jax.process_index(), pc.make_data_mesh())
    except ValueError as error:
        assert "must pass the same global batch" in str(error)
    else:
        raise AssertionError("different data on the two processes was not refused")
    if jax.process_index() == 0:
        leaves = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree.leaves(eqx.filter(run.pc_model, eqx.is_array))]
        np.savez(sys.argv[3], *leaves, steps=np.asarray(run.history.pc.inference.steps))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, argv_of, timeout=240, status=0):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    address = f"localhost:{_free_port()}"
    processes = [subprocess.Popen(argv_of(address, rank), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("the two-process run did not finish")
    for process, output in zip(processes, outputs):
        assert process.returncode == status, output[-3000:]
    return outputs


@pytest.mark.slow
def test_two_processes_train_like_one_device(tmp_path):
    """jax.distributed with two processes of two CPU devices each (docs/scaling.md's
    multi-host recipe on one machine): the 4-device data-parallel training equals the
    one-device run of this process."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _two_processes(tmp_path, lambda address, rank: [sys.executable, str(script), address, str(rank), "out.npz"])
    saved = np.load(tmp_path / "out.npz")
    model, x, y = _problem("residual_mlp", jnp.float64)
    optimiser = pc.make_optimiser(model, pc.SGD(0.05))
    one = pc.train(model, (x, y), optimiser=optimiser, solver=pc.GradientDescent(rtol=1e-8), steps=3, progress=False)
    for index, leaf in enumerate(_params(one.pc_model)):
        np.testing.assert_allclose(saved[f"arr_{index}"], leaf, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(saved["steps"], one.history.pc.inference.steps)


@pytest.mark.slow
def test_the_cli_runs_one_sweep_over_two_processes(tmp_path, data_root):
    """`pcscale run … --distributed` as docs/scaling.md gives it, on two local processes:
    process 0 alone writes the files, which match a one-device run."""
    def argv(address, rank, steps=2):
        return [sys.executable, "-m", "pcscale.cli", "run", "width-depth-linear", "--out", str(tmp_path / "hosts"),
                "--no-plot", "--no-progress", "--devices", "all", "--parallel", "batch", "--distributed",
                "--coordinator", address, "--num-processes", "2", "--process-id", str(rank),
                *[arg for item in SWEEP[:1] + ["hidden_layers=1", f"steps={steps}", "batch=8"]
                  for arg in ("--set", item)]]

    outputs = _two_processes(tmp_path, argv)
    assert "results:" in outputs[0] and "results:" not in outputs[1]
    serial = ex.run("width-depth-linear", out_dir=tmp_path / "serial", progress=False,
                    overrides=SWEEP[:1] + ["hidden_layers=1", "steps=2", "batch=8"])
    hosts = ex.load_run(tmp_path / "hosts")
    assert [r.cell.name for r in hosts.results] == [r.cell.name for r in serial.results]
    for a, b in zip(serial.results, hosts.results, strict=True):
        np.testing.assert_allclose(b.trace.cosine_lockstep, a.trace.cosine_lockstep, rtol=1e-9)
        np.testing.assert_allclose(b.trace.bp_loss, a.trace.bp_loss, rtol=1e-9)
    # Another config into the same folder: process 0 refuses it, and process 1 stops too
    # instead of waiting for it.
    outputs = _two_processes(tmp_path, lambda address, rank: argv(address, rank, steps=3), timeout=120, status=2)
    assert "another config" in outputs[0] and "process 0 refused" in outputs[1]
