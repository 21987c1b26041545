r"""Error coordinates of a PC network, and its output Jacobian in them.

Write the hidden states as z_l = f_l(z_{l−1}) + ε_l (z_0 = x clamped): the errors ε
are free variables as good as the states, and the energy becomes
E(ε) = ½‖ε‖² + λ·ℓ(y, ŷ(ε)). Around a state z̄ with errors ε̄, the map δ ↦ z(ε̄ + δ)
has the Jacobian A⁻¹, A the unit lower block-bidiagonal matrix dε/dz (identity on the
diagonal, −∂f_l/∂z_{l−1} below it), and ŷ has the Jacobian J = ∂ŷ/∂ε, with only d_y
rows per sample. Neither needs the input x: z_1 = f_1(x) + ε_1 moves with δ_1 alone.

Everything here works on one state of a batch (batch on axis 0) and runs inside jit.
"""

from __future__ import annotations

import math
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import Activities
from ._model import PCModel


def _rollout_one(model: PCModel, z_bar: Activities, delta: Activities) -> tuple[Activities, Array]:
    """The state z(ε̄ + δ) and the prediction ŷ of one sample, from the state z̄ (whose
    errors ε̄ it keeps) moved by the error increment δ."""
    states = [z_bar[0] + delta[0]]
    for index in range(1, len(z_bar)):
        layer = model.layers[index]
        kept = z_bar[index] - layer(z_bar[index - 1])  # ε̄_l, from z̄ alone
        states.append(layer(states[-1]) + kept + delta[index])
    return tuple(states), model.layers[-1](states[-1])


def error_path(model: PCModel, z: Activities, direction: Activities) -> _Path:
    """The curve t ↦ z(ε̄ + t·δ) through the batched states `z` (errors ε̄) whose tangent
    at t = 0 is `direction`: δ = A·direction (A = ∂ε/∂z, one linearised pass), and each
    point is a nonlinear forward pass that keeps the errors ε̄ + t·δ. To first order it is
    the straight line z + t·direction; unlike the line, it moves the errors only along δ,
    so the energy along it, ½‖ε̄ + t·δ‖² + λ·ℓ(y, ŷ(t)), departs from a quadratic in t
    through the output term alone."""
    z = tuple(z)
    if not z:  # no hidden layer: nothing to move
        return _Path(jax.tree_util.Partial(_stay, z), 0, 0)

    def errors(states):
        return (states[0],) + tuple(
            states[i] - jax.vmap(model.layers[i])(states[i - 1]) for i in range(1, len(states))
        )

    _, delta = jax.jvp(errors, (z,), (tuple(direction),))

    return _Path(jax.tree_util.Partial(_along, model, z, delta), 1, 1)


def _stay(z: Activities, t: Array) -> Activities:
    return z


def _along(model: PCModel, z: Activities, delta: Activities, t: Array) -> Activities:
    scaled = tuple(t * d for d in delta)
    return jax.vmap(lambda zb, d: _rollout_one(model, zb, d)[0])(z, scaled)


class _Path(eqx.Module):
    """A curve t ↦ z(t) of batched states, the linear passes it took to set up, and the
    forward passes each point costs (0 on a straight line)."""

    at: jax.tree_util.Partial
    passes: int = eqx.field(static=True)
    trial_passes: int = eqx.field(static=True)

    def __call__(self, t: Array) -> Activities:
        return self.at(t)


class LinearisedState(eqx.Module):
    """The error-to-state map linearised at a batch of states z̄.

    - `to_state(δ)`: A⁻¹·δ, the change of the states for error increments δ (a linear
      forward pass).
    - `transpose(u, w)`: A⁻ᵀ·u + Jᵀ·w for state cotangents u and output cotangents w (a
      linear backward pass); `transpose(g, 0)` turns a state gradient into the error
      gradient.
    - `prediction`: ŷ at z̄, batched.
    """

    forward: jax.tree_util.Partial
    backward: jax.tree_util.Partial
    prediction: Array

    def to_state(self, delta: Activities) -> Activities:
        return self.forward(delta)[0]

    def output(self, delta: Activities) -> Array:
        """J·δ, the change of the prediction."""
        return self.forward(delta)[1]

    def transpose(self, u: Activities, w: Array | None = None) -> Activities:
        if w is None:
            w = jnp.zeros_like(self.prediction)
        (delta,) = self.backward((tuple(u), w))
        return delta


def linearise(model: PCModel, z: Activities) -> LinearisedState:
    """The [`LinearisedState`][] of `model` at the batched states `z` (one nonlinear
    forward pass; every later product is linear)."""
    z = tuple(z)

    def rollout(delta):
        return jax.vmap(lambda zb, d: _rollout_one(model, zb, d))(z, delta)

    zeros = jax.tree.map(jnp.zeros_like, z)
    (_, prediction), forward = jax.linearize(rollout, zeros)
    backward = jax.linear_transpose(forward, zeros)
    return LinearisedState(jax.tree_util.Partial(forward), jax.tree_util.Partial(backward), prediction)


class OutputJacobian(eqx.Module):
    r"""J = ∂ŷ/∂ε of every sample at a state, with what a Gauss–Newton step needs.

    - `rows`: Jᵀ as activities with an output axis after the batch axis:
      `rows[l][i, k]` is ∂ŷ_{i,k}/∂ε_{i,l} (i over the batch, k over the d_y flattened
      outputs). Batch first, so that J·δ and Jᵀ·w are batched products over contiguous
      per-sample blocks: with the output axis first they cost 5–8× more on a CPU
      (measured at B = 64, N = 256, L = 32, d_y = 10), which made each application of
      the Gauss–Newton preconditioner cost more than a BP step.
    - `gram`: K = J·Π⁻¹·Jᵀ per sample, shape (B, d_y, d_y), Π the hidden errors'
      precisions (K = J·Jᵀ at unit precisions).
    - `inverse_precisions`: Π⁻¹ per hidden layer, each a float or an array of the
      layer's batched activity shape.
    - `curvature`: H_ℓ = ∂²ℓ/∂ŷ² per sample at ŷ, shape (B, d_y, d_y) (I for MSE,
      diag(p) − ppᵀ for cross-entropy with one-hot targets).
    - `prediction`: ŷ, batched.
    """

    rows: Activities
    gram: Float[Array, "batch out out"]
    curvature: Float[Array, "batch out out"]
    prediction: Array
    inverse_precisions: tuple[Array, ...]

    def apply(self, delta: Activities) -> Float[Array, "batch out"]:
        """J·δ per sample, flattened outputs (from the stored rows)."""
        # One row per hidden layer, and only networks with hidden layers form a Jacobian
        # (callers skip depth 1), so the sum is an array.
        return cast(Array, sum(jnp.einsum("bk...,b...->bk", row, d) for row, d in zip(self.rows, delta, strict=False)))

    def apply_inverse_precision(self, g: Activities) -> Float[Array, "batch out"]:
        """J·Π⁻¹·g per sample. For scalar precisions as Σ_l w_l·(J_l·g_l), so that J meets
        g as it is: scaling g first feeds J's batched product an elementwise producer,
        which XLA's CPU backend fuses into the product and then computes without its fast
        matrix kernel (measured at B = 64, N = 256, L = 32: 6× slower)."""
        if all(jnp.ndim(w) == 0 for w in self.inverse_precisions):
            return cast(Array, sum(w * jnp.einsum("bk...,b...->bk", row, g_l)
                                   for row, g_l, w in zip(self.rows, g, self.inverse_precisions, strict=True)))
        return self.apply(tuple(g_l * w for g_l, w in zip(g, self.inverse_precisions, strict=True)))

    def apply_transpose(self, w: Float[Array, "batch out"]) -> Activities:
        """Jᵀ·w per sample, `w` with flattened outputs."""
        return tuple(jnp.einsum("bk...,bk->b...", row, w) for row in self.rows)


def output_curvature(model: PCModel, prediction: Array, y: Array) -> Float[Array, "batch out out"]:
    """H_ℓ = ∂²ℓ(y, ŷ)/∂ŷ² of every sample at the batched `prediction`, over the flattened
    outputs (I for MSE; (Σ_k y_k)·(diag(p) − ppᵀ), p = softmax(ŷ), for cross-entropy)."""
    out_shape = prediction.shape[1:]
    size = math.prod(out_shape)

    def hessian(prediction_one, y_one):
        return jax.hessian(lambda p: model.output_energy(p.reshape(out_shape), y_one))(prediction_one.reshape(size))

    return jax.vmap(hessian)(prediction, y)


def inverse_precisions(model: PCModel, z: Activities) -> tuple[Array, ...]:
    """Π⁻¹ of every hidden error at the batched states `z`, in their dtype: a scalar array
    per layer for a fixed precision (1 at unit precision), or an array of the layer's
    batched shape for a learnt variance. Arrays either way, so that a Jacobian kept
    between Newton steps has the types of a rebuilt one."""
    result = []
    for layer, z_l in zip(model.layers[:-1], z, strict=True):
        precision = layer.error_precision(tuple(z_l.shape[1:]))
        if isinstance(precision, float):
            result.append(jnp.asarray(1.0 / precision, z_l.dtype))
        else:
            result.append(jnp.broadcast_to(1.0 / precision, z_l.shape).astype(z_l.dtype))
    return tuple(result)


def jacobian_at(
    state: LinearisedState, z: Activities, curvature: Array, inverse: tuple | None = None
) -> OutputJacobian:
    """The [`OutputJacobian`][] from a [`LinearisedState`][] at the batched states `z` and
    the output curvature H_ℓ there: d_y linear backward passes, run as one batched pass.
    `inverse`: the hidden errors' inverse precisions ([`inverse_precisions`][]); default
    all 1."""
    prediction = state.prediction
    out_shape = prediction.shape[1:]
    size = math.prod(out_shape)
    basis = jnp.eye(size, dtype=prediction.dtype).reshape((size,) + out_shape)
    zeros = jax.tree.map(jnp.zeros_like, tuple(z))
    rows = jax.vmap(lambda e: state.transpose(zeros, jnp.broadcast_to(e, prediction.shape)), out_axes=1)(basis)
    if inverse is None:
        inverse = tuple(jnp.ones((), r.dtype) for r in rows)
    # One row per hidden layer (callers skip networks without any), so the sum is an array.
    gram = cast(Array, sum(jnp.einsum("bk...,bm...->bkm", r * _per_row(w, r), r)
                           for r, w in zip(rows, inverse, strict=True)))
    return OutputJacobian(rows, gram, curvature, prediction, tuple(inverse))


def _per_row(inverse: Array, rows: Array) -> Array:
    """Π⁻¹ of one layer (a scalar, or shaped like its batched activities) broadcast
    against its rows (batch, output, activity…)."""
    return jnp.broadcast_to(inverse, (rows.shape[0],) + rows.shape[2:])[:, None]


def output_jacobian(model: PCModel, z: Activities, y: Array) -> OutputJacobian:
    """The [`OutputJacobian`][] of `model` at the batched states `z` (e.g. the feedforward
    activities), with targets `y` (only the output energy's curvature reads them)."""
    state = linearise(model, z)
    return jacobian_at(state, z, output_curvature(model, state.prediction, y), inverse_precisions(model, tuple(z)))


def woodbury_solve(jacobian: OutputJacobian, precision: float, g: Activities) -> Activities:
    r"""(Π + λ·Jᵀ H_ℓ J)⁻¹·g per sample by the Woodbury identity,
    u − λ·Π⁻¹Jᵀ (I + λ·H_ℓ K)⁻¹ H_ℓ J·u with u = Π⁻¹g and K = JΠ⁻¹Jᵀ: one d_y × d_y
    solve per sample (valid for a singular H_ℓ such as cross-entropy's). Π, the hidden
    errors' precisions, is I unless the model sets them."""
    size = jacobian.gram.shape[-1]
    eye = jnp.eye(size, dtype=jacobian.gram.dtype)
    inverse = jacobian.inverse_precisions
    g = tuple(g)
    system = eye[None] + precision * jnp.einsum("bij,bjk->bik", jacobian.curvature, jacobian.gram)
    rhs = jnp.einsum("bij,bj->bi", jacobian.curvature, jacobian.apply_inverse_precision(g))
    s = jnp.linalg.solve(system, rhs[..., None])[..., 0]
    correction = jacobian.apply_transpose(s)
    # (Π⁻¹g)_l − λ·w_l·c_l = w_l·(g_l − λ·c_l), elementwise after the products.
    return tuple(w * (g_l - precision * c_l) for g_l, w, c_l in zip(g, inverse, correction, strict=True))


# ------------------------------------------------- inference in error coordinates
def _states_one(model: PCModel, x: Array, errors: Activities) -> Activities:
    """z(ε) of one sample: z_l = f_l(z_{l−1}) + ε_l from z_0 = x."""
    states, z = [], x
    for layer, error in zip(model.layers[:-1], errors, strict=True):
        z = layer(z) + error
        states.append(z)
    return tuple(states)


def _errors_one(model: PCModel, x: Array, z: Activities) -> Activities:
    """ε(z) of one sample: ε_l = z_l − f_l(z_{l−1}), z_0 = x."""
    inputs = (x,) + tuple(z)
    return tuple(z_l - layer(prev) for layer, prev, z_l in zip(model.layers[:-1], inputs[:-1], z, strict=True))


def _straight(z: Activities, direction: Activities, t: Array) -> Activities:
    return tuple(a + t * d for a, d in zip(z, direction, strict=True))


def straight_path(z: Activities, direction: Activities) -> _Path:
    """The line t ↦ z + t·direction."""
    return _Path(jax.tree_util.Partial(_straight, tuple(z), tuple(direction)), 0, 0)


class ErrorEnergy:
    """Σ_i F_i as a function of the errors ε (E(ε) = Σ_i F_i(z(ε))), with the same calling
    convention as the state-space energy the solvers receive: calling it returns the
    value and the gradient ∇_ε E (by backpropagation through the forward map z(ε));
    `value` is the energy alone; `trial_path` the straight line in ε. Also maps between
    the coordinates: `free(z)` the errors of the states z, `states(ε)`, and
    `state_gradient(ε, g)` = ∇_z F at z(ε) from g = ∇_ε E there (Aᵀ·g, A = ∂ε/∂z: one
    forward and one linear backward pass, `residual_passes`)."""

    residual_passes = 2

    def __init__(self, model: PCModel, x: Array, y: Array):
        self.model, self.x, self.y = model, x, y

        def total(errors: Activities) -> Array:
            return jnp.sum(jax.vmap(model.energy_one)(self.states(errors), x, y))

        self.value = total
        self._value_and_grad = jax.value_and_grad(total)

    def __call__(self, errors: Activities) -> tuple[Array, Activities]:
        return self._value_and_grad(tuple(errors))

    def trial_path(self, model: PCModel, errors: Activities, direction: Activities) -> _Path:
        del model  # the straight line in ε is the curve error_path draws in z
        return straight_path(errors, direction)

    def states(self, errors: Activities) -> Activities:
        return jax.vmap(lambda xi, ei: _states_one(self.model, xi, ei))(self.x, tuple(errors))

    def free(self, z: Activities) -> Activities:
        return jax.vmap(lambda xi, zi: _errors_one(self.model, xi, zi))(self.x, tuple(z))

    def state_gradient(self, errors: Activities, grad: Activities) -> Activities:
        _, pullback = jax.vjp(self.free, self.states(errors))
        (state_grad,) = pullback(tuple(grad))
        return state_grad


def error_residual(model: PCModel, z: Activities, x: Array, y: Array) -> Array:
    """‖∇_ε Σ_i F_i‖, the residual in error coordinates, at the batched states `z`
    (A⁻ᵀ·∇_z F: one linear backward pass after the gradient). For validated inputs."""
    if not tuple(z):  # no hidden layer: no errors, nothing to move
        return jnp.zeros((), x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else model.dtype)
    grad = jax.grad(lambda u: jnp.sum(jax.vmap(model.energy_one)(u, x, y)))(tuple(z))
    delta = linearise(model, z).transpose(grad)
    return jnp.sqrt(sum(jnp.sum(d * d) for d in delta))
