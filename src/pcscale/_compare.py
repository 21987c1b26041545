"""Gradient alignment between PC and BP: cosines and norm ratios, per layer and overall."""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._custom_types import BatchX, BatchY
from ._equilibrium import AbstractInferenceMethod, inference_method
from ._model import PCModel
from ._precise import precise_jit
from ._sharding import follow_batch
from ._solution import InferenceStats
from ._solver import AbstractInferenceSolver, GradientDescent
from ._validation import as_float_array, validated


class GradientAlignment(eqx.Module):
    """How closely one gradient (PC) matches another (BP).

    - `cosine`: cos(g_PC, g_BP) over all parameters flattened together.
    - `norm_ratio`: ‖g_PC‖/‖g_BP‖.
    - `defined`: False when either norm is zero; `cosine` and `norm_ratio` are then NaN
      (never 0, which would read as "orthogonal").
    - `layer_cosines`, `layer_norm_ratios`, `layer_defined`: the same for each layer map
      f_1 … f_L (NaN and False for layers without parameters or with a zero gradient).
    """

    cosine: Float[Array, ""]
    norm_ratio: Float[Array, ""]
    defined: Bool[Array, ""]
    layer_cosines: Float[Array, " L"]
    layer_norm_ratios: Float[Array, " L"]
    layer_defined: Bool[Array, " L"]


def _weights(layer_grads):
    """A layer's gradient without its learnt log-variance (a PC-only parameter: BP's
    gradient there is 0, and it is not a weight the two methods share)."""
    if getattr(layer_grads, "log_variance", None) is None:
        return layer_grads
    return eqx.tree_at(lambda g: g.log_variance, layer_grads, None)


def _dot_and_norms(a, b) -> tuple[Array, Array, Array]:
    leaves_a = jax.tree.leaves(eqx.filter(_weights(a), eqx.is_array))
    leaves_b = jax.tree.leaves(eqx.filter(_weights(b), eqx.is_array))
    if len(leaves_a) != len(leaves_b):
        raise ValueError("the two gradients have different structures; compare gradients of the same model.")
    if not leaves_a:
        zero = jnp.zeros(())
        return zero, zero, zero
    # Non-empty and of equal lengths (checked above), so the sum is an array.
    dot = cast(Array, sum(jnp.vdot(u, v) for u, v in zip(leaves_a, leaves_b, strict=True)))
    norm_a = jnp.sqrt(sum(jnp.vdot(u, u) for u in leaves_a))
    norm_b = jnp.sqrt(sum(jnp.vdot(v, v) for v in leaves_b))
    return dot, norm_a, norm_b


def _cosine_and_ratio(dot, norm_a, norm_b):
    defined = (norm_a > 0) & (norm_b > 0)
    safe = jnp.where(defined, norm_a * norm_b, 1.0)
    cosine = jnp.where(defined, dot / safe, jnp.nan)
    ratio = jnp.where(defined, norm_a / jnp.where(norm_b > 0, norm_b, 1.0), jnp.nan)
    return cosine, ratio, defined


def compare_gradients(pc_grads: PCModel, bp_grads: PCModel) -> GradientAlignment:
    """Cosine similarities and norm ratios of two gradients of the same
    [`PCModel`][pcscale.PCModel] (e.g. from `eqx.filter_grad`), overall and per layer.
    Learnt log-variances (`PCLayer.log_variance`) are left out: they are PC's own
    parameters, with no BP counterpart.

    **Returns:** a [`GradientAlignment`][pcscale.GradientAlignment].
    """
    if len(pc_grads.layers) != len(bp_grads.layers):
        raise ValueError(
            f"`pc_grads` has {len(pc_grads.layers)} layers and `bp_grads` {len(bp_grads.layers)}: compare "
            "two gradients of the same model."
        )
    per_layer = [_dot_and_norms(a, b) for a, b in zip(pc_grads.layers, bp_grads.layers, strict=True)]
    dots, norms_a, norms_b = (jnp.stack(values) for values in zip(*per_layer, strict=True))
    layer_cos, layer_ratio, layer_defined = _cosine_and_ratio(dots, norms_a, norms_b)
    dot = jnp.sum(dots)
    cos, ratio, defined = _cosine_and_ratio(dot, jnp.sqrt(jnp.sum(norms_a**2)), jnp.sqrt(jnp.sum(norms_b**2)))
    return GradientAlignment(cos, ratio, defined, layer_cos, layer_ratio, layer_defined)


class EquilibriumComparison(eqx.Module):
    """PC against BP at the same weights (lockstep).

    - `alignment`: [`GradientAlignment`][pcscale.GradientAlignment] of ∇_θF(z*) with ∇_θ𝓛.
    - `energy`: F at the equilibrium activities z*; `loss`: the BP loss 𝓛.
    - `energy_loss_ratio`: F(z*)/𝓛 (NaN when 𝓛 = 0). For a linear network with λ = 1 it
      is at most 1, and it tends to 1 as width ≫ depth.
    - `inference`: the [`InferenceStats`][pcscale.InferenceStats] of the solve.
    """

    alignment: GradientAlignment
    energy: Float[Array, ""]
    loss: Float[Array, ""]
    energy_loss_ratio: Float[Array, ""]
    inference: InferenceStats


def equilibrium_comparison(found, loss, bp_grads) -> EquilibriumComparison:
    """PC at an equilibrium `found` (an [`Equilibrium`][pcscale.Equilibrium]) against BP
    (`loss`, `bp_grads`) at the same weights: the one place the alignment and F/𝓛 are
    formed (callable inside jit)."""
    return EquilibriumComparison(
        alignment=compare_gradients(found.gradients, bp_grads),
        energy=found.energy,
        loss=loss,
        energy_loss_ratio=jnp.where(loss > 0, found.energy / jnp.where(loss > 0, loss, 1.0), jnp.nan),
        inference=found.stats,
    )


@precise_jit
def _compare_jit(model, x, y, method, sharding):
    x, y = validated(model, x, y)
    found = method.equilibrium(model, x, y, sharding)
    return equilibrium_comparison(found, *method.loss_and_gradients(model, x, y))


def compare_at_equilibrium(
    model: PCModel, x: BatchX, y: BatchY, *, solver: AbstractInferenceSolver | AbstractInferenceMethod | None = None
) -> EquilibriumComparison:
    """Run inference, then compare the PC weight gradient at the equilibrium with the
    BP gradient at the same weights.

    **Arguments:** `model`, `x`, `y` and `solver` as for [`infer`][pcscale.infer]; `solver`
    may also be an inference method such as `pcscale.theory.ClosedForm()`.

    **Returns:** an [`EquilibriumComparison`][pcscale.EquilibriumComparison].
    """
    method = inference_method(GradientDescent() if solver is None else solver)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    y, _, sharding = follow_batch(x, y)
    return _compare_jit(model, x, y, method, sharding)
