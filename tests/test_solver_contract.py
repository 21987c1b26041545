"""The one solver contract: the stopping fields declared once on the base class, the
registry of solvers by name (pcscale.SOLVERS) that the command line, the experiments and
the tests read, and the solver interface that receives the model explicitly."""

import dataclasses
import inspect

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SOLVER_IDS, all_solvers, data, solver_matrix

import pcscale as pc

# Each solver's defaults for the stopping fields, as before they were declared once.
DEFAULTS = {
    pc.GradientDescent: (1e-5, 10_000),
    pc.OptaxSolver: (1e-5, 10_000),
    pc.ConjugateGradient: (1e-6, 10_000),
    pc.NewtonKrylov: (1e-6, 100),
    pc.Nesterov: (1e-6, 100_000),
    pc.ODEFlow: (1e-6, 100_000),
    pc.LBFGS: (1e-6, 10_000),
    pc.OptimistixSolver: (1e-6, 10_000),
    pc.MixedPrecision: (1e-6, 50),
    pc.ErrorCoordinates: (1e-6, 10_000),
}


def _exported_solver_classes():
    exported = (getattr(pc, name) for name in pc.__all__)  # loads the lazily imported names
    return {value for value in exported
            if isinstance(value, type) and issubclass(value, pc.AbstractInferenceSolver)
            and not inspect.isabstract(value)}


def _model(skips=True):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    return builder(4, 6, 2, 3, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))


def test_every_exported_solver_is_registered_and_every_registered_one_is_tested(capsys):
    """A new solver class must enter the registry, and the registry is what the tests'
    lists are made of: nothing can be forgotten."""
    registered = {entry.solver_class for entry in pc.SOLVERS.values()} - {None}
    assert registered == _exported_solver_classes() == set(DEFAULTS)
    model = _model()
    matrix = solver_matrix(model, rtol=1e-6, step_size=0.1)
    assert list(matrix) == list(pc.SOLVERS)
    for name, entry in pc.SOLVERS.items():
        if entry.solver_class is not None:
            assert type(matrix[name]) is entry.solver_class, name
    assert set(pc.SOLVERS) <= set(SOLVER_IDS) == set(all_solvers(model))
    # The command line and the experiments offer exactly the registry's names.
    from pcscale.cli import _parser
    from pcscale.experiments import _names

    assert list(_names.SOLVERS) == list(pc.SOLVERS)
    parser = _parser()
    assert [parser.parse_args(["demo", "--solver", name]).solver for name in pc.SOLVERS] == list(pc.SOLVERS)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--solver", "unregistered"])
    offered = ", ".join(repr(name) for name in pc.SOLVERS)
    assert f"(choose from {offered})" in capsys.readouterr().err


def test_the_stopping_fields_keep_each_solvers_defaults_and_are_keyword_only(unchecked):
    for cls, (rtol, max_steps) in DEFAULTS.items():
        parameters = inspect.signature(cls).parameters
        expected = {"rtol": rtol, "atol": 0.0, "max_steps": max_steps, "divergence_factor": 1e4}
        for name, default in expected.items():
            assert parameters[name].default == default, (cls.__name__, name)
            assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, (cls.__name__, name)
    # Every solver converts and validates them alike, through the base class.
    assert pc.NewtonKrylov(rtol=1, max_steps=3).rtol == 1.0
    for cls in (pc.GradientDescent, pc.ConjugateGradient, pc.MixedPrecision, pc.Nesterov):
        with pytest.raises(ValueError, match="^`atol` must be a non-negative finite float, got -1.0"):
            cls(atol=-1.0)
        with pytest.raises(ValueError, match="^`max_steps` must be a non-negative int, got 2.5"):
            cls(max_steps=2.5)
    # Krylov solvers take keywords only: a positional tolerance cannot land elsewhere.
    with pytest.raises(TypeError):
        pc.ConjugateGradient(1e-8)


def test_a_custom_solver_sets_its_defaults_with_class_keywords_and_receives_the_model():
    seen = []

    class HalfStep(pc.AbstractInferenceSolver, rtol=1e-4, max_steps=7):
        def init(self, model, fn, z, energy, grad, tolerance):
            seen.append(model)

        def step(self, model, fn, z, energy, grad, state):
            z = jax.tree.map(lambda a, g: a - 0.1 * g, z, grad)
            energy, grad = fn(z)
            return z, energy, grad, state, pc.Cost(jnp.asarray(1, jnp.int32), jnp.asarray(0, jnp.int32))

    solver = HalfStep()
    assert (solver.rtol, solver.max_steps, solver.atol) == (1e-4, 7, 0.0)
    model = _model(skips=False)
    x, y = data(jax.random.PRNGKey(1), 3, 4, 2)
    solution = pc.infer(model, x, y, solver=solver)
    reference = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.1, rtol=1e-4, max_steps=7))
    np.testing.assert_array_equal(solution.energy, reference.energy)
    assert int(solution.steps) == int(reference.steps)
    assert isinstance(seen[0], pc.PCModel)  # the model itself, passed explicitly


def test_make_solver_builds_what_the_names_always_meant():
    model = _model()
    assert pc.make_solver("gd", rtol=1e-3, step_size=0.3) == pc.GradientDescent(step_size=0.3, rtol=1e-3)
    assert pc.make_solver("nesterov", model, step_size=0.3).step_size == 0.15
    assert pc.make_solver("cg", rtol=1e-5, max_steps=9) == pc.ConjugateGradient(rtol=1e-5, max_steps=9)
    mixed = pc.make_solver("mixed", model, rtol=1e-8, max_steps=4)
    assert isinstance(mixed.solver.preconditioner, pc.DepthPreconditioner) and mixed.max_steps == 4
    assert isinstance(pc.make_solver("auto", model), pc.NewtonKrylov)
    assert pc.make_solver("ode", progress=True).progress
    with pytest.raises(ValueError, match="^`name` must be one of auto, gd, .*got 'sgd'"):
        pc.make_solver("sgd", model)
    with pytest.raises(ValueError, match="pass `model`"):
        pc.make_solver("auto")


def test_the_theory_keeps_auto_solver_and_its_old_method_names_for_one_release():
    from pcscale import theory

    assert theory.auto_solver is pc.auto_solver
    for old, new in (("ConjugateGradient", theory.LinearCG), ("DenseSolve", theory.DenseCholesky)):
        with pytest.warns(DeprecationWarning, match=f"theory.{old} is renamed"):
            assert getattr(theory, old) is new
    assert theory.LinearCG is not pc.ConjugateGradient


def test_solvers_stay_equinox_modules_that_replace_and_tree_at_alike():
    solver = pc.NewtonKrylov(rtol=1e-5, preconditioner=pc.DepthPreconditioner())
    assert dataclasses.replace(solver, max_steps=3) == eqx.tree_at(lambda s: s.max_steps, solver, 3)
    assert eqx.tree_at(lambda s: s.rtol, solver, 2e-5).rtol == 2e-5
