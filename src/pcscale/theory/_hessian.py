"""The activity Hessian H_z of a PC network: dense (small networks), matrix-free
Hessian-vector products, and its extreme eigenvalues by Lanczos (docs/background.md §4.3, §4.6).

These work for nonlinear networks too, at any activities."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Activities, BatchX, BatchY
from .._infer import SummedEnergy
from .._linear import activity_shapes, check_model, input_shape, is_linear
from .._model import PCModel
from .._precise import precise_jit
from .._validation import validated
from ._lanczos import lanczos
from ._structure import cast_model, check_key

# Dense Hessians beyond this many activity coordinates per sample (≈ 0.8 GB in float64)
# are refused: use hessian_vector_product or hessian_spectrum instead.
DENSE_LIMIT = 10_000


def _check_has_activities(model: PCModel, function: str) -> None:
    if model.num_hidden == 0:
        raise ValueError(
            f"{function}: the model has depth 1, so it has no free activities and no activity "
            "Hessian; use a model with at least two layers."
        )


def summed_gradient(model: PCModel, x: Array, y: Array):
    """z ↦ ∇_z Σ_i F_i: the stack of per-sample activity gradients."""

    return jax.grad(SummedEnergy(model, x, y).value)


def batch_hvp(model: PCModel, x: Array, y: Array, z: Activities):
    """v ↦ (H_{z_i}·v_i)_i, forward-over-reverse; the operator is block-diagonal over
    samples (each sample's activities only meet its own energy)."""
    gradient = summed_gradient(model, x, y)

    def hvp(v: Activities) -> Activities:
        return jax.jvp(gradient, (z,), (v,))[1]

    return hvp


def _inputs(model, x, y, z, dtype, function) -> tuple[PCModel, Array, Array, Activities | None]:
    """Checked, dtype-cast arguments; shapes are validated at trace time inside the
    jitted functions by `_traced`."""
    check_model(model, function, nonlinear_ok=True)
    model, x, y = cast_model(model, x, y, dtype)
    if isinstance(z, list):
        z = tuple(z)
    if isinstance(z, tuple):
        z = tuple(jnp.asarray(z_l, model.dtype) for z_l in z)
    return model, x, y, z


def _traced(model, x, y, z):
    """Inside jit: validated data and the activities (feedforward when `z` is None)."""
    x, y = validated(model, x, y, z)
    if z is None:
        z = jax.vmap(model.activities_one)(x)
    return x, y, z


@precise_jit
def _dense_hessian(model, x, y, z):
    x, y, z = _traced(model, x, y, z)
    z_one = jax.tree.map(lambda leaf: leaf[0], z)
    flat, unravel = ravel_pytree(z_one)

    def energy(vector):
        return model.energy_one(unravel(vector), x[0], y[0])

    return jax.hessian(energy)(flat)


def activity_hessian(
    model: PCModel, x: BatchX | None = None, y: BatchY | None = None, z: Activities | None = None, *, dtype=None
) -> Float[Array, "n n"]:
    r"""The dense activity Hessian H_z = ∂²F_i/∂z_i² of one sample's energy, with the
    activities flattened layer by layer (z_1 first). For small networks only.

    For a linear network (φ = identity, no biases, MSE output) H_z is block-tridiagonal,
    does not depend on the sample, the activities or the target (docs/background.md §4.3), and
    `x`, `y`, `z` may be omitted. For any other network it depends on all three: pass a
    batch of **one** sample (e.g. `x[i:i+1]`), and optionally its activities `z`
    (default: feedforward). The Hessian of the batch-mean energy F with respect to one
    sample's activities is H_z/B.

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `x`, `y`, `z`: one sample (batch axis of size 1) and its activities.
    - `dtype`: compute in this dtype; default the model's.

    **Returns:** H_z, an n × n matrix with n the number of activity coordinates per
    sample (n = N·H for an MLP).
    """
    check_model(model, "activity_hessian", nonlinear_ok=True)
    _check_has_activities(model, "activity_hessian")
    if x is None and (y is not None or z is not None):
        raise ValueError(
            "`y` or `z` was given without `x`; pass the sample's input x (e.g. x[i:i+1]) "
            "together with its target and activities, or none of them for a linear network."
        )
    model, _, _ = cast_model(model, None, None, dtype)
    dtype = None
    linear = is_linear(model, input_shape(model, x))
    if x is None:
        if not linear:
            raise ValueError(
                "activity_hessian of a nonlinear network (or one with biases or a "
                "cross-entropy output) depends on the sample and its activities; pass x, y "
                "(and optionally z) for one sample, e.g. x[i:i+1], y[i:i+1]."
            )
        shape = input_shape(model, None)
        _, out = activity_shapes(model, shape)
        x = jnp.zeros((1,) + shape, model.dtype)
        y = jnp.zeros((1,) + tuple(out.shape), model.dtype)
    elif y is None:
        raise ValueError("`y` is missing: pass the target of the sample together with `x`.")
    model, x, y, z = _inputs(model, x, y, z, dtype, "activity_hessian")
    if not linear and x.shape[0] != 1:
        raise ValueError(
            f"activity_hessian of a nonlinear network takes one sample, got a batch of "
            f"{x.shape[0]} (x.shape={x.shape}); pass x[i:i+1], y[i:i+1] (each sample has its "
            "own Hessian), or use hessian_spectrum for the whole batch."
        )
    hidden, _ = activity_shapes(model, tuple(x.shape[1:]))
    size = sum(math.prod(h.shape) for h in hidden)
    if size > DENSE_LIMIT:
        raise ValueError(
            f"activity_hessian would form a dense {size} × {size} matrix (limit {DENSE_LIMIT}); "
            "use hessian_vector_product or hessian_spectrum, which are matrix-free."
        )
    return _dense_hessian(model, x, y, z)


@precise_jit
def _hvp_jit(model, x, y, z, v):
    x, y, z = _traced(model, x, y, z)
    return batch_hvp(model, x, y, z)(v)


def hessian_vector_product(
    model: PCModel, x: BatchX, y: BatchY, v: Activities, *, z: Activities | None = None, dtype=None
) -> Activities:
    """Matrix-free activity-Hessian products (H_{z_i}·v_i)_i for every sample of a batch
    (forward-over-reverse autodiff of the summed energy; no Hessian is formed). Costs
    about two energy-gradient evaluations.

    **Arguments:**

    - `model`, `x`, `y`: as for [`infer`][pcscale.infer].
    - `v`: a direction, shaped like the activities (a tuple of batched arrays).
    - `z`: the activities at which the Hessian is taken; default the feedforward state
      (irrelevant for linear networks, whose energy is quadratic).
    - `dtype`: compute in this dtype; default the model's.

    **Returns:** H·v, shaped like `v`.
    """
    _check_has_activities(model, "hessian_vector_product")
    model, x, y, z = _inputs(model, x, y, z, dtype, "hessian_vector_product")
    if isinstance(v, list):
        v = tuple(v)
    hidden, _ = activity_shapes(model, tuple(x.shape[1:]))
    shapes = tuple((x.shape[0],) + tuple(h.shape) for h in hidden)
    if not isinstance(v, tuple) or tuple(jnp.shape(v_l) for v_l in v) != shapes:
        got = tuple(jnp.shape(v_l) for v_l in v) if isinstance(v, tuple) else type(v).__name__
        raise ValueError(
            f"`v` must be shaped like the activities, {shapes}, got {got}; pass a tuple with "
            "one batched array per hidden layer."
        )
    v = tuple(jnp.asarray(v_l, model.dtype) for v_l in v)
    return _hvp_jit(model, x, y, z, v)


class HessianSpectrum(eqx.Module):
    """Extreme eigenvalues of the activity Hessian, from Lanczos.

    - `max_eigenvalue`, `min_eigenvalue`: the extreme Ritz values. Over a batch, these
      are the extremes over all samples' Hessians (the operator an inference solver
      with per-sample steps faces: gradient descent is stable for β < 2/`max_eigenvalue`).
    - `condition_number`: their ratio κ (NaN if the smallest eigenvalue is not
      positive: an indefinite Hessian, e.g. a nonlinear network away from equilibrium).
    - `max_bound`, `min_bound`: residual bounds: an exact eigenvalue lies within this
      distance of each Ritz value. The smallest Ritz value is an upper bound on λ_min
      and converges last; increase `iterations` until `min_bound` is small against it.
    - `iterations`: Lanczos steps taken.
    """

    max_eigenvalue: Float[Array, ""]
    min_eigenvalue: Float[Array, ""]
    condition_number: Float[Array, ""]
    max_bound: Float[Array, ""]
    min_bound: Float[Array, ""]
    iterations: Int[Array, ""]


@precise_jit
def _spectrum(model, x, y, z, iterations, key):
    x, y, z = _traced(model, x, y, z)
    flat, unravel = ravel_pytree(z)
    hvp = batch_hvp(model, x, y, z)

    def matvec(vector):
        return ravel_pytree(hvp(unravel(vector)))[0]

    ritz = lanczos(matvec, flat.size, iterations, flat.dtype, key=key)
    return HessianSpectrum(
        max_eigenvalue=ritz.largest,
        min_eigenvalue=ritz.smallest,
        # An indefinite Hessian (a nonlinear network away from equilibrium) has no
        # condition number in the SPD sense.
        condition_number=jnp.where(
            ritz.smallest > 0, ritz.largest / jnp.where(ritz.smallest > 0, ritz.smallest, 1.0), jnp.nan
        ),
        max_bound=ritz.largest_bound,
        min_bound=ritz.smallest_bound,
        iterations=ritz.iterations,
    )


def hessian_spectrum(
    model: PCModel,
    x: BatchX,
    y: BatchY,
    z: Activities | None = None,
    *,
    iterations: int = 100,
    dtype=None,
    key: PRNGKeyArray,
) -> HessianSpectrum:
    """Largest and smallest eigenvalues and the condition number of the activity
    Hessian, by Lanczos with full reorthogonalisation on Hessian-vector products —
    never forming the Hessian. Works for any network at any activities.

    Memory is (`iterations` + 1) vectors of the size of all activities of the batch. For
    a linear network every sample has the same Hessian, so one sample (`x[:1]`) gives
    the same spectrum at 1/B of the cost. λ_min needs O(√κ) iterations to converge;
    check `min_bound`.

    **Arguments:**

    - `model`, `x`, `y`: as for [`infer`][pcscale.infer].
    - `z`: activities at which to take the Hessian; default the feedforward state.
    - `iterations`: Lanczos steps (capped at the number of activity coordinates, where
      the result is exact up to rounding). Default 100.
    - `dtype`: compute in this dtype; default the model's.
    - `key`: PRNG key for the random start vector.

    **Returns:** a [`HessianSpectrum`][pcscale.theory.HessianSpectrum].
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive int, got {iterations!r}; e.g. iterations=100.")
    check_key(key)
    check_model(model, "hessian_spectrum", nonlinear_ok=True)
    _check_has_activities(model, "hessian_spectrum")
    model, x, y, z = _inputs(model, x, y, z, dtype, "hessian_spectrum")
    return _spectrum(model, x, y, z, iterations, key)
