r"""The rescaling matrix of any PC network at its feedforward state, and the one-step
(Gauss–Newton) estimate of the equilibrium energy it implies (docs/theory.md, "The
nonlinear rescaling matrix").

In error coordinates ε_l = z_l − f_l(z_{l−1}) the energy of one sample is
E(ε) = ½‖ε‖² + λ·ℓ(y, ŷ(ε)) (with per-layer precisions Π, ½εᵀΠε; below, read I as Π
and JJᵀ as JΠ⁻¹Jᵀ). At the feedforward state ε = 0, with J = ∂ŷ/∂ε (d_y rows),
K = JJᵀ, e = ∂ℓ/∂ŷ and H_ℓ = ∂²ℓ/∂ŷ², the Gauss–Newton model of E is
λℓ + λeᵀJδ + ½δᵀ(I + λJᵀH_ℓJ)δ, whose minimum is

    F̂ = λℓ − ½λ²·eᵀK(I + λH_ℓK)⁻¹e

(push-through identity J(I + λJᵀH_ℓJ)⁻¹Jᵀ = K(I + λH_ℓK)⁻¹). For MSE (e = −r, H_ℓ = I)
this is ½rᵀS⁻¹r with S = I/λ + K, the closed form of a linear network, where it is
exact."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import BatchX, BatchY
from .._error_coordinates import output_curvature, output_jacobian
from .._linear import check_model
from .._model import PCModel
from .._precise import precise_jit
from .._validation import validated
from ._structure import cast_model, warn_if_unresolved


class NonlinearRescaling(eqx.Module):
    r"""The rescaling S_i = I/λ + J_iJ_iᵀ of every sample at the feedforward state, and the
    one-step estimate F̂ of the equilibrium energy.

    - `matrix`: S_i, shape (B, d_y, d_y) (outputs flattened).
    - `gram`: K_i = J_iJ_iᵀ = S_i − I/λ, accumulated on its own so that a small gap is not
      lost to cancellation.
    - `feedforward_energy`: λ𝓛 = (λ/B)·Σ_i ℓ(y_i, ŷ_i), the energy at the feedforward
      state (BP's loss times λ).
    - `energy_drop`: λ𝓛 − F̂ = (λ²/2B)·Σ_i e_iᵀK_i(I + λH_iK_i)⁻¹e_i, formed directly
      so that a small drop keeps its digits.
    - `precision`: λ.

    Properties: `energy` = F̂ (the batch mean, normalised as
    [`PCModel.energy`][pcscale.PCModel.energy]); `energy_gap` = 1 − F̂/(λ𝓛), the
    predicted relative PC–BP energy gap; `spectral_gap` = mean_i ‖S_i‖₂ − 1/λ and
    `trace_gap` = mean_i tr(S_i − I/λ)/d_y; `spectral_norm` = 1/λ + `spectral_gap`.
    For a linear network every S_i is the S of
    [`rescaling`][pcscale.theory.rescaling], so the gaps coincide with its own, and F̂ is
    the closed-form F* of [`equilibrium_energy`][pcscale.theory.equilibrium_energy].
    """

    matrix: Float[Array, "batch out out"]
    gram: Float[Array, "batch out out"]
    feedforward_energy: Float[Array, ""]
    energy_drop: Float[Array, ""]
    precision: float = eqx.field(static=True)

    @property
    def energy(self) -> Float[Array, ""]:
        return self.feedforward_energy - self.energy_drop

    @property
    def energy_gap(self) -> Float[Array, ""]:
        # A network that fits its batch exactly (𝓛 = 0) has no gap.
        positive = self.feedforward_energy > 0
        return jnp.where(positive, self.energy_drop / jnp.where(positive, self.feedforward_energy, 1.0), 0.0)

    @property
    def spectral_gap(self) -> Float[Array, ""]:
        return jnp.mean(jnp.linalg.eigvalsh(self.gram)[:, -1])

    @property
    def trace_gap(self) -> Float[Array, ""]:
        return jnp.mean(jnp.trace(self.gram, axis1=-2, axis2=-1)) / self.gram.shape[-1]

    @property
    def spectral_norm(self) -> Float[Array, ""]:
        return 1.0 / self.precision + self.spectral_gap


def _output_gradient(model: PCModel, prediction: Array, y: Array) -> tuple[Array, Array]:
    """ℓ(y_i, ŷ_i) and e_i = ∂ℓ/∂ŷ_i of every sample, the latter over the flattened
    outputs (B, d_y)."""
    out_shape = prediction.shape[1:]
    size = math.prod(out_shape)

    def one(prediction_one, y_one):
        return jax.value_and_grad(lambda p: model.output_energy(p.reshape(out_shape), y_one))(
            prediction_one.reshape(size))

    return jax.vmap(one)(prediction, y)


def nonlinear_rescaling_of(model: PCModel, x: Array, y: Array) -> NonlinearRescaling:
    """The [`NonlinearRescaling`][pcscale.theory.NonlinearRescaling] for validated inputs
    (callable inside jit)."""
    lam = model.output_precision
    if model.num_hidden == 0:  # no free activities: K = 0 and F̂ = λ𝓛
        prediction = jax.vmap(model.forward_one)(x)
        size = math.prod(prediction.shape[1:])
        gram = jnp.zeros((x.shape[0], size, size), prediction.dtype)
        curvature = output_curvature(model, prediction, y)
    else:
        z = jax.vmap(model.activities_one)(x)
        jacobian = output_jacobian(model, z, y)
        prediction, gram, curvature = jacobian.prediction, jacobian.gram, jacobian.curvature
    losses, e = _output_gradient(model, prediction, y)
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    system = eye[None] + lam * jnp.einsum("bij,bjk->bik", curvature, gram)
    u = jnp.linalg.solve(system, e[..., None])[..., 0]  # (I + λH_iK_i)⁻¹e_i
    drop = 0.5 * lam**2 * jnp.mean(jnp.einsum("bi,bij,bj->b", e, gram, u))
    return NonlinearRescaling(matrix=eye[None] / lam + gram, gram=gram, feedforward_energy=lam * jnp.mean(losses),
                              energy_drop=drop, precision=lam)


@precise_jit
def _nonlinear_rescaling_jit(model, x, y):
    x, y = validated(model, x, y)
    return nonlinear_rescaling_of(model, x, y)


def nonlinear_rescaling(model: PCModel, x: BatchX, y: BatchY, *, dtype=None) -> NonlinearRescaling:
    r"""The rescaling matrix of any PC network at its feedforward state, and the one-step
    estimate of its equilibrium energy (docs/theory.md, "The nonlinear rescaling matrix").

    With J_i = ∂ŷ_i/∂ε the output Jacobian of sample i in error coordinates (its d_y
    rows built by d_y linear backward passes), K_i = J_iJ_iᵀ, e_i = ∂ℓ/∂ŷ_i and
    H_i = ∂²ℓ/∂ŷ_i²,

    $$S_i = I/\lambda + K_i,\qquad
      \hat F = \frac1B\sum_i \Big[\lambda\,\ell_i - \tfrac12\lambda^2\,
      e_i^\top K_i (I + \lambda H_i K_i)^{-1} e_i\Big],$$

    F̂ being the minimum of the Gauss–Newton model of the energy around ε = 0. For an MSE
    output the bracket is ½r_iᵀS_i⁻¹r_i (r_i = y_i − ŷ_i): for a linear network S_i is
    the S of [`rescaling`][pcscale.theory.rescaling] and F̂ the exact F*; for a wide
    μPC network F̂ approaches the equilibrium energy as the width grows.

    **Arguments:**

    - `model`: any [`PCModel`][pcscale.PCModel] (any activation, MSE or cross-entropy
      output, any builder); its output is flattened to d_y values.
    - `x`, `y`: a batch as for [`infer`][pcscale.infer].
    - `dtype`: compute in this dtype (e.g. `jnp.float64`); default the model's.

    **Returns:** a [`NonlinearRescaling`][pcscale.theory.NonlinearRescaling]. Memory is
    O(d_y·B·N·L) for the Jacobian's rows. In float32 a warning is raised when
    ‖S − I/λ‖ is below float32 resolution.
    """
    check_model(model, "nonlinear_rescaling", nonlinear_ok=True)
    model, x, y = cast_model(model, x, y, dtype)
    result = _nonlinear_rescaling_jit(model, x, y)
    warn_if_unresolved(lambda: result.spectral_gap, model, "nonlinear_rescaling")
    return result
