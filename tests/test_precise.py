"""Full float32 matmul precision is set once, at the jitted entry points, and reaches every
matrix product of their programs (gradients and solver loops included)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.lax import Precision

import pcscale as pc
from pcscale import _train
from pcscale.theory import _closed_form, _hessian

KEY = jax.random.PRNGKey(0)


def _dots(jaxpr):
    """Every dot_general equation of a closed jaxpr, sub-jaxprs (jit, loops, conds) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(inner, jax.extend.core.ClosedJaxpr):
                    yield from _dots(inner.jaxpr)
                elif isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _dots(inner)


def _all_highest(function, *args):
    jaxpr = eqx.filter_make_jaxpr(function)(*args)[0]
    dots = list(_dots(jaxpr.jaxpr))
    assert dots, "the program has no matrix product to check"
    return all(eqn.params["precision"] == (Precision.HIGHEST, Precision.HIGHEST) for eqn in dots)


def _problem(activation="tanh"):
    model = pc.nn.mlp(3, 8, 2, 3, parameterisation=pc.MuPC(), activation=activation, use_bias=False, key=KEY)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    y = jax.random.normal(jax.random.PRNGKey(2), (4, 2))
    return model, x, y


def test_a_training_step_traces_every_product_at_full_precision():
    model, x, y = _problem()
    optimiser = pc.make_optimiser(model, pc.SGD(0.1))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    method = pc.inference_method(pc.NewtonKrylov(rtol=1e-4, max_steps=5))
    args = (model, model, state, state, x, y, optimiser, method, None, False, None)
    assert _all_highest(_train._comparison_step, *args)


def test_the_theory_entry_points_trace_at_full_precision():
    model, x, y = _problem("linear")
    assert _all_highest(_closed_form._value_and_grad_jit, model, x, y)
    z = model.init_activities(x)
    assert _all_highest(_hessian._hvp_jit, model, x, y, z, z)


def test_without_the_entry_point_the_default_precision_stays():
    # The checker itself: the same maths traced outside an entry point keeps the default.
    model, x, y = _problem()
    assert not _all_highest(lambda m: jnp.mean(jax.vmap(m.forward_one)(x)), model)


def test_an_inference_method_called_on_its_own_runs_at_full_precision():
    # Outside pcscale's entry points too (eagerly, or inside a user's jit).
    model, x, y = _problem("linear")
    for method in (pc.theory.ClosedForm(), pc.inference_method(pc.NewtonKrylov(rtol=1e-4, max_steps=3))):
        assert _all_highest(lambda m: method.equilibrium(m, x, y).energy, model)
        assert _all_highest(lambda m: method.loss_and_gradients(m, x, y)[0], model)
