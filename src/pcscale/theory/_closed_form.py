r"""Closed-form equilibrium of linear PC networks (docs/background.md §4.2): the rescaling
S = I/λ + Σ_ℓ G_ℓG_ℓᵀ, the equilibrated energy F* = (1/2B)·Σ_i r_iᵀS⁻¹r_i and its
parameter gradient."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, PyTree

from .._custom_types import BatchX, BatchY
from .._layer import identity
from .._linear import activity_shapes, check_model, input_shape, transpose_of
from .._model import PCModel
from .._precise import precise_jit
from .._validation import validated
from ..nn._mlp import Linear
from ._structure import cast_model, prepare, warn_if_unresolved


class Rescaling(eqx.Module):
    r"""The rescaling matrix S of a linear PC network and the pieces it is made of.

    S = I/λ + Σ_{ℓ=1}^{H} G_ℓΠ_ℓ⁻¹G_ℓᵀ, with G_ℓ = A_L·A_{L−1}⋯A_{ℓ+1} the Jacobian of
    the output with respect to hidden activity ℓ and Π_ℓ the precision of its error
    (I unless the layer sets one).

    - `matrix`: S (d_y × d_y).
    - `gram`: Σ_ℓ G_ℓΠ_ℓ⁻¹G_ℓᵀ = S − I/λ, accumulated on its own so that a small gap
      is not lost to cancellation.
    - `precision`: λ.

    Properties: `spectral_gap` = ‖S‖₂ − 1/λ (the largest eigenvalue of `gram`),
    `trace_gap` = tr(S − I/λ)/d_y and `spectral_norm` = ‖S‖₂. With λ = 1 and d_y = 1,
    both gaps are s − 1.
    """

    matrix: Float[Array, "out out"]
    gram: Float[Array, "out out"]
    precision: float = eqx.field(static=True)

    @property
    def spectral_gap(self) -> Float[Array, ""]:
        return jnp.linalg.eigvalsh(self.gram)[-1]

    @property
    def trace_gap(self) -> Float[Array, ""]:
        return jnp.trace(self.gram) / self.gram.shape[0]

    @property
    def spectral_norm(self) -> Float[Array, ""]:
        return 1.0 / self.precision + self.spectral_gap


def accumulate(model: PCModel, shape: tuple[int, ...], *, end_to_end: bool = False):
    """Σ_ℓ G_ℓΠ_ℓ⁻¹G_ℓᵀ (Π_ℓ the precision of ε_ℓ; I unless set) by one backward
    accumulation: the d_y rows of G_H = A_L come from transposing the readout on the
    output basis, then G_ℓ = G_{ℓ+1}·A_{ℓ+1} (one d_y × N by N × N product per layer,
    O(L·d_y·N²) in all) with each Gram added as it is formed. Works for any linear
    layer maps (a conv layer is transposed the same way).

    With `end_to_end`, one more step through the input layer also returns
    G_0 = A_L⋯A_1, the whole network as a d_y × D matrix (shaped (d_y, *input shape)),
    or None otherwise."""
    hidden, out = activity_shapes(model, shape)
    size = math.prod(out.shape)
    rows = jnp.eye(size, dtype=out.dtype).reshape((size,) + tuple(out.shape))
    gram = jnp.zeros((size, size), out.dtype)
    inputs = (jax.ShapeDtypeStruct(shape, out.dtype),) + tuple(hidden)
    # layers[l] maps z_l to z_{l+1} (z_0 = x, z_L = output): transposing it turns
    # G_{l+1} into G_l.
    for index in range(model.depth - 1, 0, -1):
        rows = jax.vmap(transpose_of(model.layers[index], inputs[index], index))(rows)
        flat = rows.reshape(size, -1)
        # G_l Π_l⁻¹ G_lᵀ, Π_l the precision of the error of z_l (made by layers[index − 1]).
        inverse = 1.0 / jnp.ravel(jnp.broadcast_to(
            model.layers[index - 1].error_precision(tuple(inputs[index].shape)), inputs[index].shape))
        gram = gram + (flat * inverse[None, :]) @ flat.T
    if not end_to_end:
        return gram, None
    return gram, jax.vmap(transpose_of(model.layers[0], inputs[0], 0))(rows)


def rescaling_from(model: PCModel, gram: Array) -> Rescaling:
    identity = jnp.eye(gram.shape[0], dtype=gram.dtype) / model.output_precision
    return Rescaling(matrix=identity + gram, gram=gram, precision=model.output_precision)


def rescaling_of(model: PCModel, shape: tuple[int, ...]) -> Rescaling:
    return rescaling_from(model, accumulate(model, shape)[0])


def residuals(model: PCModel, x: Array, y: Array) -> Array:
    """r = y − ŷ of the feedforward pass, flattened to (B, d_y)."""
    prediction = jax.vmap(model.forward_one)(x)
    return (y - prediction).reshape(x.shape[0], -1)


def solve_rescaled(scaling: Rescaling, r: Array) -> Array:
    """S⁻¹r_i for every row r_i, by a Cholesky solve (S is never inverted)."""
    factor = jsl.cho_factor(scaling.matrix, lower=True)
    return jsl.cho_solve(factor, r.T).T


def _end_to_end(model: PCModel, x: Array, y: Array) -> bool:
    """Whether ŷ is cheaper from the end-to-end map G_0 = A_L⋯A_1 than from the forward
    pass: when the batch exceeds d_y. Only layers 2 … L must be linear for the closed
    form; the input map f_1 may be anything (e.g. an embedding), so the shortcut is taken
    only for a linear one."""
    first = model.layers[0]
    return x.shape[0] > math.prod(y.shape[1:]) and isinstance(first.module, Linear) and first.activation is identity


def _residuals(model: PCModel, x: Array, y: Array, network: Array | None) -> Array:
    if network is None:
        return residuals(model, x, y)
    batch, out_size = x.shape[0], math.prod(y.shape[1:])
    prediction = x.reshape(batch, -1) @ network.reshape(out_size, -1).T
    return y.reshape(batch, -1) - prediction


def closed_form_energy(model: PCModel, x: Array, y: Array) -> tuple[Array, tuple[Rescaling, Array]]:
    """F*, and (S, r), for validated inputs (callable inside jit and under autodiff).

    When the batch is larger than d_y, ŷ is read off the end-to-end map G_0 = A_L⋯A_1
    that the same backward accumulation yields in one more step, instead of pushing all
    B samples through the network: the cost, and that of the gradient, is then
    O(L·d_y·N² + d_y·N·D + B·D·d_y) rather than O(L·B·N²)."""
    end_to_end = _end_to_end(model, x, y)
    gram, network = accumulate(model, tuple(x.shape[1:]), end_to_end=end_to_end)
    scaling = rescaling_from(model, gram)
    r = _residuals(model, x, y, network)
    energy = 0.5 * jnp.mean(jnp.sum(r * solve_rescaled(scaling, r), axis=-1))
    return energy, (scaling, r)


def linear_loss(model: PCModel, x: Array, y: Array) -> Array:
    """The feedforward loss ½·mean‖y − ŷ‖² of a linear network, with ŷ from the
    end-to-end map when the batch exceeds d_y (as in `closed_form_energy`), so that it
    and its weight gradient cost O(L·d_y·N²) instead of O(L·B·N²). Validated inputs."""
    end_to_end = _end_to_end(model, x, y)
    network = accumulate(model, tuple(x.shape[1:]), end_to_end=True)[1] if end_to_end else None
    r = _residuals(model, x, y, network)
    return 0.5 * jnp.mean(jnp.sum(r**2, axis=-1))


@precise_jit
def _rescaling_jit(model, shape):
    return rescaling_of(model, shape)


@precise_jit
def _energy_jit(model, x, y):
    x, y = validated(model, x, y)
    return closed_form_energy(model, x, y)


def closed_form_value_and_grad(model: PCModel, x: Array, y: Array):
    """(F*, S) and ∇_θF* through the whole program, including the dependence of S on
    the weights (validated inputs; callable inside jit)."""

    def energy(m):
        return closed_form_energy(m, x, y)

    (value, (scaling, r)), grads = eqx.filter_value_and_grad(energy, has_aux=True)(model)
    return value, scaling, r, grads


@precise_jit
def _value_and_grad_jit(model, x, y):
    x, y = validated(model, x, y)
    return closed_form_value_and_grad(model, x, y)


def rescaling(model: PCModel, x: BatchX | None = None, *, dtype=None) -> Rescaling:
    r"""The rescaling S = I/λ + Σ_ℓ G_ℓG_ℓᵀ of a linear PC network (docs/background.md §4.2).

    G_ℓ is built by one backward accumulation (G_H = A_L, G_ℓ = G_{ℓ+1}A_{ℓ+1}), at
    cost O(L·d_y·N²) and O(d_y·N) extra memory; no per-layer products are formed. S does
    not depend on the data.

    **Arguments:**

    - `model`: a linear [`PCModel`][pcscale.PCModel] (φ = identity on every layer, no
      biases, MSE output), with or without skips, any parameterisation, γ0 and λ.
    - `x`: an example batch, needed only for the input shape when the first layer is
      not a `pcscale.nn.Linear` (e.g. a linear CNN).
    - `dtype`: compute in this dtype (e.g. `jnp.float64`); default the model's.

    **Returns:** a [`Rescaling`][pcscale.theory.Rescaling]. In float32 a warning is
    raised when ‖S − I/λ‖ is below float32 resolution.
    """
    check_model(model, "rescaling")
    model, x, _ = cast_model(model, x, None, dtype)
    result = _rescaling_jit(model, input_shape(model, x))
    warn_if_unresolved(lambda: result.spectral_gap, model, "rescaling")
    return result


def equilibrium_energy(model: PCModel, x: BatchX, y: BatchY, *, dtype=None) -> Float[Array, ""]:
    r"""The energy at the activity equilibrium of a linear PC network, in closed form:

    $$F^* = \frac{1}{2B}\sum_i r_i^\top S^{-1} r_i,\qquad r_i = y_i - \hat y_i,$$

    with ŷ the feedforward output and S from [`rescaling`][pcscale.theory.rescaling]
    (S⁻¹r by a Cholesky solve). F* ≤ 𝓛 when λ = 1, with equality when S = I.

    Differentiable: `eqx.filter_grad` of a function calling it gives ∇_θF*, including the
    dependence of S on the weights; [`closed_form_gradients`][pcscale.theory.closed_form_gradients]
    does this in one jitted call.

    **Arguments:** `model` as for [`rescaling`][pcscale.theory.rescaling]; `x`, `y` a
    batch as for [`infer`][pcscale.infer]; `dtype` an optional compute dtype.

    **Returns:** F*, a scalar.
    """
    model, x, y = prepare(model, x, y, dtype, "equilibrium_energy")
    energy, (scaling, _) = _energy_jit(model, x, y)
    warn_if_unresolved(lambda: scaling.spectral_gap, model, "equilibrium_energy")
    return energy


def closed_form_gradients(
    model: PCModel, x: BatchX, y: BatchY, *, dtype=None
) -> tuple[Float[Array, ""], PyTree]:
    """F* and its parameter gradient ∇_θF* by autodiff through the closed form
    (docs/background.md §2.5, "closed-form inference"). By the envelope theorem this equals the
    PC weight gradient ∇_θF(z*; θ) at the exact activities.

    **Arguments:** as for [`equilibrium_energy`][pcscale.theory.equilibrium_energy].

    **Returns:** `(energy, gradient)`, the gradient a PCModel-shaped pytree.
    """
    model, x, y = prepare(model, x, y, dtype, "closed_form_gradients")
    energy, scaling, _, grads = _value_and_grad_jit(model, x, y)
    warn_if_unresolved(lambda: scaling.spectral_gap, model, "closed_form_gradients")
    return energy, grads
