"""Bad input gets a clear error naming the argument, the value received and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale as pc

D, N, C, L = 4, 8, 3, 3


@pytest.fixture(scope="module")
def model():
    return pc.nn.residual_mlp(D, N, C, L, parameterisation=pc.MuPC(), key=jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def ce_model():
    return pc.nn.mlp(D, N, C, L, output_energy=pc.CrossEntropy(), key=jax.random.PRNGKey(0))


SOLVER = pc.GradientDescent(step_size=0.1, max_steps=5)


def test_mismatched_batch_sizes(model, unchecked):
    with pytest.raises(ValueError, match=r"same batch size.*x.shape=\(5, 4\).*y.shape=\(4, 3\)"):
        pc.infer(model, jnp.ones((5, D)), jnp.ones((4, C)), solver=SOLVER)


def test_target_width_differs_from_output_width(model):
    with pytest.raises(ValueError, match=r"per-sample shape \(7,\).*output has shape \(3,\)"):
        pc.infer(model, jnp.ones((2, D)), jnp.ones((2, 7)), solver=SOLVER)


def test_integer_labels_need_one_hot(ce_model):
    with pytest.raises(TypeError, match=r"integer labels.*one_hot\(y, 3\)"):
        pc.infer(ce_model, jnp.ones((2, D)), jnp.array([0, 2]), solver=SOLVER)


def test_wrong_input_width(model):
    with pytest.raises(ValueError, match=r"per-sample shape \(5,\)"):
        model.loss(jnp.ones((2, 5)), jnp.ones((2, C)))


def test_unbatched_input(model):
    with pytest.raises(ValueError, match="batch axis"):
        model(jnp.ones(D))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs(model, bad):
    x = jnp.ones((2, D)).at[0, 1].set(bad)
    with pytest.raises(Exception, match="`x` contains NaN or inf"):
        pc.infer(model, x, jnp.ones((2, C)), solver=SOLVER)
    y = jnp.ones((2, C)).at[1, 0].set(bad)
    optimiser = pc.make_optimiser(model, pc.SGD(0.1))
    with pytest.raises(Exception, match="`y` contains NaN or inf"):
        import equinox as eqx

        pc.bp_step(model, optimiser.init(eqx.filter(model, eqx.is_array)), jnp.ones((2, D)), y, optimiser=optimiser)


@pytest.mark.parametrize("name, value, pattern", [
    ("depth", 0, r"`depth` must be a positive integer, got 0"),
    ("width", 0, r"`width` must be a positive integer, got 0"),
    ("input_dim", -3, r"`input_dim` must be a positive integer, got -3"),
    ("output_dim", 2.5, r"`output_dim` must be a positive integer, got 2.5"),
])
def test_bad_sizes(name, value, pattern, unchecked):
    sizes = dict(input_dim=D, width=N, output_dim=C, depth=L)
    sizes[name] = value
    with pytest.raises(ValueError, match=pattern):
        pc.nn.mlp(**sizes, key=jax.random.PRNGKey(0))


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"`activation` must be one of .*got 'swish'"):
        pc.nn.mlp(D, N, C, L, activation="swish", key=jax.random.PRNGKey(0))


def test_unknown_parameterisation_object(unchecked):
    with pytest.raises(TypeError, match="parameterisation"):
        pc.nn.mlp(D, N, C, L, parameterisation="mupc", key=jax.random.PRNGKey(0))


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1.0), "step_size"),
    (dict(rtol=-1.0), "rtol"),
    (dict(max_steps=-1), "max_steps"),
    (dict(max_steps=2.5), "max_steps"),
    (dict(divergence_factor=0.5), "divergence_factor"),
])
def test_bad_solver_settings(kwargs, pattern, unchecked):
    with pytest.raises(ValueError, match=pattern):
        pc.GradientDescent(**kwargs)


def test_bad_optimiser_settings(model, unchecked):
    with pytest.raises(ValueError, match="learning_rate"):
        pc.Adam(-1.0)
    with pytest.raises(TypeError, match="config"):
        pc.make_optimiser(model, "adam")
    with pytest.raises(TypeError, match="optimiser"):
        pc.OptaxSolver("sgd")


def test_bad_model_settings(unchecked):
    layer = pc.PCLayer(pc.nn.Linear(jnp.ones((2, 2))))
    with pytest.raises(ValueError, match="output_precision"):
        pc.PCModel((layer,), pc.MSE(), output_precision=0.0)
    with pytest.raises(ValueError, match="non-empty tuple"):
        pc.PCModel((), pc.MSE())
    with pytest.raises(TypeError, match="layers\\[0\\]"):
        pc.PCModel((layer.module,), pc.MSE())


def test_wrong_activities(model):
    x = jnp.ones((2, D))
    z = model.init_activities(x)
    with pytest.raises(ValueError, match=r"tuple of 2 activity arrays"):
        model.energy(z[:1], x, jnp.ones((2, C)))
    with pytest.raises(ValueError, match=r"`z\[1\]` has shape \(3, 8\), expected \(2, 8\)"):
        model.energy((z[0], jnp.ones((3, N))), x, jnp.ones((2, C)))


def test_bad_steps(model):
    optimiser = pc.make_optimiser(model, pc.SGD(0.1))
    with pytest.raises(ValueError, match="`steps` must be a positive int, got 0"):
        pc.train(model, (jnp.ones((2, D)), jnp.ones((2, C))), optimiser=optimiser, solver=SOLVER, steps=0)


def test_an_optimiser_config_is_not_an_optimiser(model, unchecked):
    import equinox as eqx

    with pytest.raises(TypeError, match=r"`optimiser` must be an optax.GradientTransformation, got Adam.*make_optimiser"):
        pc.bp_step(model, None, jnp.ones((2, D)), jnp.ones((2, C)), optimiser=pc.Adam(1e-3))


def test_integer_settings_are_floats():
    assert pc.GradientDescent(step_size=1) == pc.GradientDescent(step_size=1.0)
    assert isinstance(pc.GradientDescent(rtol=0).rtol, float)
