"""No silent stall: solves that cannot progress say `stalled` promptly; wall-clock
budgets and progress lines; the float32 rounding floor, warned about before solving;
and mixed precision, which certifies float32 models to tolerances below that floor.

Expected values are independent of the library: residuals are recomputed in float64
with jax.grad of the hand-written energy (helpers.hand_energy), and the floor is
compared with eps·‖z‖ computed here."""

import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import data, hand_energy, hand_forward, mup_multipliers, weights_of

import pcscale as pc
from pcscale import _monitor

D, N, C, DEPTH, B = 6, 32, 3, 8, 4  # tanh residual MLP, H = 7 hidden layers
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def problem():
    model = pc.nn.residual_mlp(D, N, C, DEPTH, parameterisation=pc.MuPC(), activation="tanh",
                               dtype=jnp.float32, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), B, D, C, dtype=jnp.float32)
    return model, x, y


def _hand_gradient_norm(model, x, y, z):
    """‖∇_z Σ_i F_i‖ in float64, from the hand-written energy of the same weights."""
    weights = [w.astype(jnp.float64) for w in weights_of(model)]
    multipliers = mup_multipliers(D, N, DEPTH, skips=True)
    x64, y64 = x.astype(jnp.float64), y.astype(jnp.float64)
    z64 = tuple(z_l.astype(jnp.float64) for z_l in z)
    grads = jax.grad(lambda z: B * hand_energy(z, weights, multipliers, x64, y64, skips=True))(z64)
    return float(jnp.sqrt(sum(jnp.sum(g**2) for g in grads)))


def _feedforward(model, x):
    weights = [w.astype(jnp.float64) for w in weights_of(model)]
    multipliers = mup_multipliers(D, N, DEPTH, skips=True)
    hidden, _ = hand_forward(weights, multipliers, x.astype(jnp.float64), skips=True)
    return tuple(hidden)


BUDGET = 100_000
STALLING = {
    "gd": pc.GradientDescent(step_size=0.2, rtol=1e-10, max_steps=BUDGET),
    "momentum": pc.OptaxSolver(optax.sgd(0.1, momentum=0.8), rtol=1e-10, max_steps=BUDGET),
    "adam": pc.OptaxSolver(optax.adam(0.02), rtol=1e-10, max_steps=BUDGET),
    "nesterov": pc.Nesterov(step_size=0.1, rtol=1e-10, max_steps=BUDGET),
    "cg": pc.ConjugateGradient(rtol=1e-10, max_steps=BUDGET),
    "pcg": pc.ConjugateGradient(rtol=1e-10, max_steps=BUDGET, preconditioner=pc.DepthPreconditioner()),
    "newton": pc.NewtonKrylov(rtol=1e-10, max_steps=1000),
    "ode": pc.ODEFlow(rtol=1e-10, max_steps=BUDGET),
}


@pytest.mark.parametrize("name", list(STALLING))
def test_every_solver_stops_stalled_at_the_float32_floor_well_within_its_budget(problem, name):
    """rtol = 1e-10 is far below float32's floor: each solver must end `stalled` (not
    run its 10⁵-step budget, nor claim convergence), reporting the true residual."""
    model, x, y = problem
    solver = STALLING[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the up-front floor warning, tested below
        solution = pc.infer(model, x, y, solver=solver)
    assert solution.result == pc.RESULTS.stalled, name
    assert int(solution.steps) < solver.max_steps // 5, name
    true = _hand_gradient_norm(model, x, y, solution.activities)
    initial = _hand_gradient_norm(model, x, y, _feedforward(model, x))
    assert true > 1e-10 * initial  # really not converged
    # At the floor the float32 gradient is rounding noise: its norm matches the float64
    # one only to tens of per cent.
    np.testing.assert_allclose(float(solution.residual), true, rtol=0.7)
    if name in ("gd", "cg", "pcg", "newton", "nesterov"):
        # These reach the floor before stalling: within a small factor of eps·‖z‖.
        floor = EPS32 * float(jnp.sqrt(sum(jnp.sum(z.astype(jnp.float64) ** 2) for z in solution.activities)))
        assert true < 10 * floor, (name, true, floor)


def test_newton_krylov_stalls_after_a_few_steps_and_bounded_products(problem):
    """Newton–Krylov's inner CG also gives up at the floor, so a stalled Newton solve
    costs a bounded number of products, not max_steps × max_inner_steps."""
    model, x, y = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10, max_steps=1000, max_inner_steps=1000))
    assert solution.result == pc.RESULTS.stalled
    assert int(solution.steps) <= 20
    assert int(solution.hvp_evals) < 20 * 200


def test_stall_window_zero_turns_the_test_off_and_runs_the_budget(problem):
    model, x, y = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.2, rtol=1e-10, max_steps=3000, stall_window=0))
    assert solution.result == pc.RESULTS.max_steps
    assert int(solution.steps) == 3000


def test_a_slow_but_steady_solve_is_not_called_stalled():
    """Gradient descent with a tiny step on a float64 problem makes slow, steady progress:
    it must run out of budget (max_steps), never be called stalled."""
    model = pc.nn.residual_mlp(D, 8, C, 4, parameterisation=pc.MuPC(), activation="tanh",
                               dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=1e-3, rtol=1e-12, max_steps=5000))
    assert solution.result == pc.RESULTS.max_steps


def test_max_time_ends_a_long_solve_with_its_own_result(problem):
    model, x, y = problem
    model64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    solver = pc.GradientDescent(step_size=1e-4, rtol=1e-14, max_steps=10**9, stall_window=0, max_time=0.5)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rtol = 1e-14 is below float64's floor: by design
        solution = pc.infer(model64, x.astype(jnp.float64), y.astype(jnp.float64), solver=solver)
    elapsed = time.perf_counter() - start
    assert solution.result == pc.RESULTS.max_time
    assert 0 < int(solution.steps) < 10**9
    assert elapsed >= 0.5
    assert elapsed < 120  # it stopped, rather than running 10⁹ steps


def test_progress_lines_report_the_step_and_residual(problem, capsys, monkeypatch):
    model, x, y = problem
    monkeypatch.setattr(_monitor, "PROGRESS_INTERVAL", 0.0)  # a line at every report
    monkeypatch.setitem(_monitor._FLOPS_PER_SECOND, "cpu", 1.0)  # a report at every step
    solver = pc.GradientDescent(step_size=0.2, rtol=1e-3, max_steps=2000, progress=True)
    solution = pc.infer(model, x, y, solver=solver)
    jax.block_until_ready(solution)
    jax.effects_barrier()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "inference: step" in line]
    assert lines, "no progress line"
    steps = [int(line.split("step ")[1].split(",")[0]) for line in lines]
    assert steps == sorted(steps) and steps[-1] <= int(solution.steps)
    residual = float(lines[-1].split("relative residual ")[1].split(",")[0])
    assert residual > 0


def test_the_floor_warning_comes_before_an_uncertifiable_solve_only(problem):
    model, x, y = problem
    with pytest.warns(UserWarning, match=r"rounding floor of float32.*MixedPrecision"):
        pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-2))
        model64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
        pc.infer(model64, x.astype(jnp.float64), y.astype(jnp.float64), solver=pc.NewtonKrylov(rtol=1e-9))


def test_residual_floor_is_where_a_float32_solve_stalls(problem):
    """The estimate sits at, or a little above, the relative residual (recomputed in
    float64 by hand) at which Newton–Krylov stalls; in float64 it is 2²⁹ times smaller."""
    model, x, y = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stalled = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10))
    initial = _hand_gradient_norm(model, x, y, _feedforward(model, x))
    reached = _hand_gradient_norm(model, x, y, stalled.activities) / initial
    floor = float(pc.residual_floor(model, x, y))
    assert 0.8 * reached < floor < 5 * reached, (floor, reached)
    model64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    floor64 = float(pc.residual_floor(model64, x.astype(jnp.float64), y.astype(jnp.float64)))
    np.testing.assert_allclose(floor / floor64, EPS32 / np.finfo(np.float64).eps, rtol=1e-3)


def test_mixed_precision_certifies_a_float32_model_to_1e_6(problem):
    model, x, y = problem
    initial = _hand_gradient_norm(model, x, y, _feedforward(model, x))
    solution = pc.infer(model, x, y, solver=pc.MixedPrecision(rtol=1e-6))
    assert solution.result == pc.RESULTS.converged
    assert solution.activities[0].dtype == jnp.float64
    true = _hand_gradient_norm(model, x, y, solution.activities)
    assert true <= 1.05e-6 * initial, true / initial
    # The plain float32 solve cannot get there.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-6))
    assert plain.result != pc.RESULTS.converged
    assert _hand_gradient_norm(model, x, y, plain.activities) > 1e-6 * initial


def test_mixed_precision_weight_gradients_match_float64_ones(problem):
    """A PC step from mixed-precision activities gives the float64 model's weight
    gradient to float32 accuracy."""
    model, x, y = problem
    model64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    x64, y64 = x.astype(jnp.float64), y.astype(jnp.float64)
    z_mixed = pc.infer(model, x, y, solver=pc.MixedPrecision(rtol=1e-8)).activities
    z_exact = pc.infer(model64, x64, y64, solver=pc.NewtonKrylov(rtol=1e-10)).activities
    _, mixed = pc.pc_gradients(model, z_mixed, x, y)
    _, exact = pc.pc_gradients(model64, z_exact, x64, y64)
    for g, h in zip(jax.tree.leaves(mixed), jax.tree.leaves(exact)):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(h), rtol=2e-4, atol=1e-6 * float(jnp.max(jnp.abs(h))))


def test_mixed_precision_needs_64_bit_mode(problem):
    model, x, y = problem
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            pc.infer(model, x, y, solver=pc.MixedPrecision())


def test_auto_solver_certifies_in_float64_below_the_float32_floor(problem):
    model, x, y = problem
    below = pc.auto_solver(model, x, y, rtol=1e-8)
    assert isinstance(below, pc.MixedPrecision)
    assert isinstance(below.solver, pc.NewtonKrylov) and below.rtol == 1e-8
    assert isinstance(pc.auto_solver(model, x, y, rtol=1e-2), pc.NewtonKrylov)
    assert isinstance(pc.auto_solver(model, rtol=1e-8), pc.NewtonKrylov)  # no batch: rules 1–4 only


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pc.GradientDescent(stall_window=-1), "stall_window"),
        (lambda: pc.NewtonKrylov(max_time=0.0), "max_time"),
        (lambda: pc.NewtonKrylov(max_time=float("inf")), "max_time"),
        (lambda: pc.Nesterov(progress="yes"), "progress"),
        (lambda: pc.MixedPrecision(solver="newton"), "solver"),
        (lambda: pc.MixedPrecision(solver=pc.MixedPrecision()), "solver"),
    ],
)
def test_bad_settings_are_rejected_with_the_argument_named(make, match, unchecked):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("name", ["lbfgs", "nonlinear-cg"])
def test_optimistix_solvers_stop_stalled_at_the_float64_floor(name):
    """L-BFGS and other Optimistix minimisers refuse float32 activities under x64, so
    their stall is shown at float64's floor: rtol = 1e-17 is below it."""
    import optimistix as optx

    model = pc.nn.residual_mlp(D, N, C, DEPTH, parameterisation=pc.MuPC(), activation="tanh",
                               dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    solver = (pc.LBFGS(rtol=1e-17, max_steps=BUDGET) if name == "lbfgs" else
              pc.OptimistixSolver(optx.NonlinearCG(rtol=1e-6, atol=1e-6), rtol=1e-17, max_steps=BUDGET))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = pc.infer(model, x, y, solver=solver)
    assert solution.result == pc.RESULTS.stalled
    assert int(solution.steps) < BUDGET // 5
    assert float(solution.relative_residual) > 1e-17
