"""Bad inputs found by users: each gets an error naming the argument, the value (or type)
received and the fix, and the valid neighbours of each bad input keep working."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pcscale as pc

D, N, C, L = 4, 8, 3, 3
INF, NAN = float("inf"), float("nan")


@pytest.fixture(scope="module")
def model():
    return pc.nn.mlp(D, N, C, L, key=jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def ce_model():
    return pc.nn.mlp(D, N, C, L, output_energy=pc.CrossEntropy(), key=jax.random.PRNGKey(0))


def _x(batch=2):
    return jax.random.normal(jax.random.PRNGKey(1), (batch, D), jnp.float32)


# ------------------------------------------------------------- 1. optimiser rates
@pytest.mark.parametrize("make, name, fix", [
    (lambda: pc.SGD(INF), "learning_rate", "learning_rate=1e-3"),
    (lambda: pc.SGD(NAN), "learning_rate", "learning_rate=1e-3"),
    (lambda: pc.Adam(NAN), "learning_rate", "learning_rate=1e-3"),
    (lambda: pc.Adam(-INF), "learning_rate", "learning_rate=1e-3"),
    (lambda: pc.FromOptax(optax.lion, learning_rate=INF), "learning_rate", "learning_rate=1e-3"),
    (lambda: pc.SGD(0.1, weight_decay=INF), "weight_decay", "use 0 to disable it"),
    (lambda: pc.Adam(1e-3, weight_decay=NAN), "weight_decay", "use 0 to disable it"),
    (lambda: pc.Adam(1e-3, eps=INF), "eps", "use 0 to disable it"),
    (lambda: pc.SGD(0.1, momentum=INF), "momentum", "momentum=0.9"),
    (lambda: pc.SGD(0.1, momentum=NAN), "momentum", "momentum=0.9"),
    (lambda: pc.SGD(0.1, momentum=1.0), "momentum", "momentum=0.9"),
    (lambda: pc.Adam(1e-3, b1=NAN), "b1", "b1=0.9"),
    (lambda: pc.Adam(1e-3, b2=1.0), "b2", "b2=0.999"),
])
def test_non_finite_optimiser_settings_are_rejected(make, name, fix):
    with pytest.raises(ValueError) as error:
        make()
    message = str(error.value)
    assert message.startswith(f"`{name}` must be a")
    assert "finite" in message
    assert fix in message


def test_finite_optimiser_settings_are_still_accepted(model):
    configs = (pc.SGD(0.1, momentum=0.9, weight_decay=0.0), pc.Adam(1e-3, eps=0.0), pc.FromOptax(optax.lion, 1e-4))
    for config in configs:
        optimiser = pc.make_optimiser(model, config)
        optimiser.init(eqx.filter(model, eqx.is_array))
    assert pc.SGD(1).learning_rate == 1


# --------------------------------------------------- 3a. integer one-hot targets
def test_integer_one_hot_targets_are_accepted_and_equal_float_ones(ce_model):
    x = _x()
    labels = jnp.array([0, 2])
    as_int = jax.nn.one_hot(labels, C, dtype=jnp.int32)
    as_float = jax.nn.one_hot(labels, C, dtype=jnp.float32)
    assert float(ce_model.loss(x, as_int)) == float(ce_model.loss(x, as_float))
    solver = pc.GradientDescent(step_size=0.1, max_steps=20)
    from_int = pc.infer(ce_model, x, as_int, solver=solver)
    from_float = pc.infer(ce_model, x, as_float, solver=solver)
    assert float(from_int.energy) == float(from_float.energy)
    assert from_int.activities[0].dtype == jnp.float32


def test_class_index_targets_still_need_one_hot(ce_model):
    with pytest.raises(TypeError) as error:
        ce_model.loss(_x(), jnp.array([0, 2], jnp.int32))
    message = str(error.value)
    assert "`y` holds integer labels" in message and "jax.nn.one_hot(y, 3)" in message


def test_integer_targets_that_are_not_one_hot_are_refused(ce_model):
    bad = jnp.array([[1, 0, 0], [0, 2, 1]], jnp.int32)
    with pytest.raises(ValueError) as error:
        ce_model.loss(_x(), bad)
    message = str(error.value)
    assert "`y` holds integers" in message and "not one-hot rows" in message
    assert "y[1] is [0, 2, 1]" in message and "jax.nn.one_hot(labels, 3)" in message
    # Inside jit (infer) the same check runs on device.
    pattern = r"`y` holds integers .*not one-hot rows.*jax.nn.one_hot\(labels, 3\)"
    with pytest.raises(eqx.EquinoxRuntimeError, match=pattern):
        pc.infer(ce_model, _x(), bad, solver=pc.GradientDescent(max_steps=3))


# ------------------------------------------------------------- 3b. string inputs
@pytest.mark.parametrize("x, dtype, kind", [
    (np.array([["a"] * D] * 2), "<U1", "strings"),
    ([["1.0"] * D] * 2, "<U3", "strings"),
    (np.array([[1, "b", None, 3]] * 2, dtype=object), "object", "Python objects"),
])
def test_non_numeric_inputs_name_their_dtype(model, x, dtype, kind, unchecked):
    with pytest.raises(TypeError) as error:
        pc.infer(model, x, jnp.ones((2, C)))
    message = str(error.value)
    assert message.startswith("`x` must be numeric")
    assert f"dtype {dtype} ({kind})" in message
    assert "np.asarray(x, dtype=np.float32)" in message


# -------------------------------------------------------- 3c. integer model dtype
@pytest.mark.parametrize("dtype", [jnp.int32, "int8", jnp.bool_])
def test_integer_model_dtype_is_refused_at_construction(dtype):
    with pytest.raises(TypeError) as error:
        pc.nn.mlp(D, N, C, L, dtype=dtype, key=jax.random.PRNGKey(0))
    message = str(error.value)
    assert message.startswith("`dtype` must be a floating dtype, got")
    assert "dtype=jnp.float32" in message


def test_a_pc_model_of_integer_weights_is_refused(unchecked):
    layer = pc.PCLayer(pc.nn.Linear(jnp.ones((C, D), jnp.int32)))
    with pytest.raises(TypeError) as error:
        pc.PCModel((layer,), pc.MSE())
    message = str(error.value)
    assert "`layers` must hold floating-point parameters, got only dtype int32" in message
    assert ".astype(jnp.float32)" in message


def test_floating_dtypes_and_integer_buffers_are_still_accepted():
    assert pc.nn.mlp(D, N, C, L, dtype=jnp.bfloat16, key=jax.random.PRNGKey(0)).dtype == jnp.bfloat16

    class Gather(eqx.Module):  # a custom block holding an integer index buffer
        weight: jax.Array
        index: jax.Array

        def __call__(self, x):
            return self.weight @ x[self.index]

    weight = jnp.ones((C, D), jnp.float32)
    model = pc.PCModel((pc.PCLayer(Gather(weight, jnp.arange(D, dtype=jnp.int32)[::-1])),), pc.MSE())
    assert model.dtype == jnp.float32
    x = _x()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(x[:, ::-1] @ weight.T), rtol=1e-6)


# ------------------------------------------------------------------- 3d. keys
@pytest.mark.parametrize("build", [
    lambda key: pc.nn.mlp(D, N, C, L, key=key),
    lambda key: pc.nn.residual_mlp(D, N, C, L, key=key),
    lambda key: pc.nn.resnet(3, 4, C, n_res=0, image_size=8, key=key),
    lambda key: pc.nn.transformer(11, 8, n_heads=2, n_blocks=1, max_len=4, key=key),
])
def test_an_int_key_is_refused_by_every_builder(build, unchecked):
    with pytest.raises(TypeError) as error:
        build(0)
    assert "`key` must be a JAX PRNG key, got int 0; use key=jax.random.key(0)" in str(error.value)


@pytest.mark.parametrize("key, got", [
    (jax.random.split(jax.random.key(0), 3), "shape (3,)"),
    (jnp.zeros(2, jnp.int32), "dtype int32"),
])
def test_an_array_that_is_not_one_key_is_refused(key, got, unchecked):
    with pytest.raises(TypeError) as error:
        pc.nn.mlp(D, N, C, L, key=key)
    message = str(error.value)
    assert message.startswith("`key` must be a JAX PRNG key") and got in message
    assert "key=jax.random.key(0)" in message


def test_typed_and_legacy_keys_are_both_accepted():
    typed = pc.nn.mlp(D, N, C, L, key=jax.random.key(0))
    legacy = pc.nn.mlp(D, N, C, L, key=jax.random.PRNGKey(0))
    # One stream: the same weights either way.
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(typed), jax.tree.leaves(legacy)))
    # Keys traced under vmap (an ensemble of models) pass as well.
    batched = jax.vmap(lambda key: pc.nn.mlp(D, N, C, L, key=key))(jax.random.split(jax.random.key(0), 2))
    assert batched.layers[0].module.weight.shape == (2, N, D)


def test_parameterise_checks_its_key(unchecked):
    from pcscale import NetworkShape, Role, WeightRole

    pattern = r"`key` must be a JAX PRNG key, got int 3; use key=jax.random.key\(3\)"
    with pytest.raises(TypeError, match=pattern):
        pc.nn.parameterise(
            pc.nn.Linear(jnp.ones((N, N))), lambda path, leaf: WeightRole(Role.HIDDEN, fan_in=N),
            pc.MuPC(), NetworkShape(width=N, depth=L), key=3,
        )


# ----------------------------------------------------- 3e. optimiser state mismatch
FIX = "opt_state = optimiser.init(eqx.filter(model, eqx.is_array))"


def _steps(model, opt_state, optimiser):
    x, y = _x(), jnp.ones((2, model.layers[-1].module.weight.shape[0]))
    return [
        lambda: pc.bp_step(model, opt_state, x, y, optimiser=optimiser),
        lambda: pc.pc_step(model, opt_state, x, y, optimiser=optimiser,
                           solver=pc.GradientDescent(max_steps=3)),
    ]


@pytest.mark.parametrize("other", [
    {"width": 2 * N},  # another width: another parameter tree
    {"depth": L + 1},  # another depth
    {"output_dim": C + 2},  # same tree, another leaf shape
])
def test_an_optimiser_state_of_another_model_is_refused(other):
    sizes = {"input_dim": D, "width": N, "output_dim": C, "depth": L}
    model_a = pc.nn.mlp(**sizes, key=jax.random.PRNGKey(0))
    model_b = pc.nn.mlp(**{**sizes, **other}, key=jax.random.PRNGKey(0))
    optimiser = pc.make_optimiser(model_b, pc.Adam(1e-3))
    state_a = optimiser.init(eqx.filter(model_a, eqx.is_array)) if other.keys() == {"output_dim"} else (
        pc.make_optimiser(model_a, pc.Adam(1e-3)).init(eqx.filter(model_a, eqx.is_array))
    )
    for step in _steps(model_b, state_a, optimiser):
        with pytest.raises(ValueError) as error:
            step()
        message = str(error.value)
        assert message.startswith("`opt_state` does not fit this model")
        assert FIX in message
    if other.keys() == {"output_dim"}:
        assert "has shape (3, 8)" in message and "gives shape (5, 8)" in message


def test_an_optimiser_built_for_another_model_is_refused():
    model_a = pc.nn.mlp(D, N, C, L, key=jax.random.PRNGKey(0))
    model_b = pc.nn.mlp(D, 2 * N, C, L, key=jax.random.PRNGKey(0))
    optimiser_a = pc.make_optimiser(model_a, pc.Adam(1e-3))
    state_a = optimiser_a.init(eqx.filter(model_a, eqx.is_array))
    for step in _steps(model_b, state_a, optimiser_a):
        with pytest.raises(ValueError) as error:
            step()
        message = str(error.value)
        assert message.startswith("`optimiser` cannot be initialised on this model's parameters")
        assert "pcscale.make_optimiser(model, config)" in message and FIX in message


def test_check_opt_state_accepts_the_right_state_in_its_jit_canonical_dtype(model):
    from pcscale._validation import check_opt_state

    optimiser = optax.adam(1e-3)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    check_opt_state(model, optimiser, state)
    # A float64 copy (e.g. read from a checkpoint) is float32 once jit sees it without x64.
    wide = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == jnp.float32 else a, state)
    with jax.enable_x64(False):
        check_opt_state(model, optimiser, wide)
    with pytest.raises(ValueError, match=r"`opt_state` does not fit this model: its leaf .* dtype float64"):
        check_opt_state(model, optimiser, wide)
    new_model, new_state, metrics = pc.bp_step(model, state, _x(), jnp.ones((2, C)), optimiser=optimiser)
    assert bool(metrics.updated)
    check_opt_state(new_model, optimiser, new_state)


# ------------------------------------------------------------- 3f. model.loss
@pytest.mark.parametrize("bad", [NAN, INF])
def test_loss_refuses_non_finite_inputs_like_infer(model, bad):
    x, y = _x(), jnp.ones((2, C))
    with pytest.raises(ValueError) as error:
        model.loss(x.at[0, 1].set(bad), y)
    message = str(error.value)
    assert "`x` contains 1 NaN or inf value(s)" in message and "clean or mask the data" in message
    with pytest.raises(ValueError, match=r"`y` contains 1 NaN or inf value\(s\); clean or mask the data"):
        model.loss(x, y.at[1, 2].set(bad))
    pattern = r"`x` contains NaN or inf values; clean or mask the data"
    with pytest.raises(eqx.EquinoxRuntimeError, match=pattern):
        eqx.filter_jit(lambda m, x, y: m.loss(x, y))(model, x.at[0, 1].set(bad), y)


def test_loss_of_finite_inputs_is_unchanged(model):
    x, y = _x(), jnp.ones((2, C), jnp.float32)
    reference = jnp.mean(jax.vmap(lambda xi, yi: model.output_energy(model.forward_one(xi), yi))(x, y))
    assert float(model.loss(x, y)) == float(reference)
    assert float(eqx.filter_jit(lambda m, x, y: m.loss(x, y))(model, x, y)) == float(reference)
