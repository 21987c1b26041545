"""The one training-step kernel: an inference method's equilibrium, the PC weight gradient
there and a guarded optimiser update; the BP twin's step; and the alignment of the two.
`pc_step`, `bp_step`, `train`, the experiments' cells, closed-form training and the
coordinate check all run these functions (inside their own `jit`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.sharding import NamedSharding
from jaxtyping import Array, Bool, Float

from ._compare import GradientAlignment, compare_gradients, equilibrium_comparison
from ._equilibrium import AbstractInferenceMethod, Equilibrium
from ._gradients import loss_gradients
from ._solution import RESULTS, InferenceStats


class PCStepMetrics(eqx.Module):
    """Metrics of one PC step, all measured at θ_t before the update.

    - `energy`: F at the final activities; `loss`: the feedforward (BP) loss 𝓛(θ_t).
    - `grad_norm`: ‖∇_θ F‖.
    - `inference`: [`InferenceStats`][pcscale.InferenceStats] of the solve.
    - `updated`: False when the update was refused (diverged inference, or a non-finite
      gradient, unless `allow_diverged`).
    - `diagnostics`: the inference method's own scalars (for
      [`pcscale.theory.ClosedForm`][pcscale.theory.ClosedForm] the rescaling gaps), or None.
    """

    energy: Float[Array, ""]
    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    inference: InferenceStats
    updated: Bool[Array, ""]
    diagnostics: eqx.Module | None = None


class BPStepMetrics(eqx.Module):
    """Metrics of one BP step at θ_t: `loss`, `grad_norm`, `updated` (False for a
    non-finite gradient, which is skipped)."""

    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    updated: Bool[Array, ""]


class ReferenceCheck(eqx.Module):
    """The PC step checked against a reference method's equilibrium at the same weights
    (e.g. the closed form of a linear network): its `energy`, the `cosine` of the PC
    gradient with its gradient, and its `diagnostics`."""

    energy: Float[Array, ""]
    cosine: Float[Array, ""]
    diagnostics: eqx.Module | None = None


class ComparisonMetrics(eqx.Module):
    """Per-step metrics of a PC model trained beside its BP twin, at θ_t before update t.

    - `pc`: [`PCStepMetrics`][pcscale.PCStepMetrics] of the PC model.
    - `bp_loss`: the BP twin's loss 𝓛(θ_t^BP); `bp_updated`: False when its gradient was
      not finite and the update was skipped.
    - `lockstep`: alignment of ∇F(θ_t^PC) with ∇𝓛(θ_t^PC) (same weights).
    - `trajectory`: alignment of ∇F(θ_t^PC) with ∇𝓛(θ_t^BP) (separate trajectories).
    - `energy_loss_ratio`: F(z*; θ_t^PC)/𝓛(θ_t^PC).
    - `reference`: a [`ReferenceCheck`][pcscale.ReferenceCheck] when training was given a
      `reference` method, else None.
    """

    pc: PCStepMetrics
    bp_loss: Float[Array, ""]
    bp_updated: Bool[Array, ""]
    lockstep: GradientAlignment
    trajectory: GradientAlignment
    energy_loss_ratio: Float[Array, ""]
    reference: ReferenceCheck | None = None


def _all_finite(tree) -> Bool[Array, ""]:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def guarded_update(model, opt_state, grads, optimiser, ok):
    """Optimiser update, applied only if `ok` holds and the gradient, the new weights and
    the new optimiser state are all finite (an infinite learning rate turns a finite
    gradient into non-finite weights); a refused step keeps the old weights and
    optimiser state. Returns the new model and state, ‖grads‖ and whether the update was
    applied."""
    grads = eqx.filter(grads, eqx.is_array)
    grad_norm = otu.tree_norm(grads)
    params = eqx.filter(model, eqx.is_array)
    updates, new_state = optimiser.update(grads, opt_state, params)
    new_params = eqx.filter(eqx.apply_updates(model, updates), eqx.is_array)
    accept = jnp.isfinite(grad_norm) & ok & _all_finite(new_params) & _all_finite(new_state)
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    model = eqx.combine(jax.tree.map(keep, new_params, params), model)
    opt_state = jax.tree.map(lambda new, old: keep(new, old) if eqx.is_array(new) else new, new_state, opt_state)
    return model, opt_state, grad_norm, accept


def pc_update(model, opt_state, x, y, optimiser, method: AbstractInferenceMethod, allow_diverged: bool,
              sharding: NamedSharding | None = None) -> tuple:
    """One PC step on validated inputs: `method`'s equilibrium, then the guarded update with
    its weight gradient (refused after diverged inference unless `allow_diverged`).
    Returns `(model, opt_state, equilibrium, PCStepMetrics)`."""
    found: Equilibrium = method.equilibrium(model, x, y, sharding)
    ok = jnp.array(True) if allow_diverged else found.stats.result != RESULTS.diverged
    model, opt_state, grad_norm, accept = guarded_update(model, opt_state, found.gradients, optimiser, ok)
    metrics = PCStepMetrics(found.energy, found.loss, grad_norm, found.stats, accept, found.diagnostics)
    return model, opt_state, found, metrics


def bp_update(model, opt_state, x, y, optimiser, loss_and_gradients=loss_gradients) -> tuple:
    """One BP step on validated inputs (a non-finite gradient is skipped). Returns
    `(model, opt_state, gradients, BPStepMetrics)`."""
    loss, grads = loss_and_gradients(model, x, y)
    model, opt_state, grad_norm, accept = guarded_update(model, opt_state, grads, optimiser, jnp.array(True))
    return model, opt_state, grads, BPStepMetrics(loss, grad_norm, accept)


def comparison_update(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, method: AbstractInferenceMethod,
                      reference: AbstractInferenceMethod | None, allow_diverged: bool,
                      sharding: NamedSharding | None = None) -> tuple:
    """One step of a PC model and its BP twin on validated inputs, every metric at θ_t:
    the PC step, the BP twin's step, the PC gradient against ∇𝓛 at the same weights
    (lockstep) and against the twin's (trajectory), and, with a `reference` method, the
    PC step checked against its equilibrium. The loss and ∇𝓛 come from the cheapest
    exact evaluation the methods know (`loss_and_gradients`). Returns
    `(pc_model, bp_model, pc_state, bp_state, ComparisonMetrics)`."""
    loss_and_gradients = (method if reference is None else reference).loss_and_gradients
    new_pc, pc_state, found, pc = pc_update(pc_model, pc_state, x, y, optimiser, method, allow_diverged, sharding)
    lockstep = equilibrium_comparison(found, *loss_and_gradients(pc_model, x, y))  # at θ_t
    check = None
    if reference is not None:
        exact = reference.equilibrium(pc_model, x, y, sharding)
        check = ReferenceCheck(exact.energy, compare_gradients(found.gradients, exact.gradients).cosine,
                               exact.diagnostics)
    bp_model, bp_state, bp_grads, bp = bp_update(bp_model, bp_state, x, y, optimiser, loss_and_gradients)
    metrics = ComparisonMetrics(
        pc=eqx.tree_at(lambda m: m.loss, pc, lockstep.loss),  # 𝓛(θ_t) as the BP side evaluates it
        bp_loss=bp.loss,
        bp_updated=bp.updated,
        lockstep=lockstep.alignment,
        trajectory=compare_gradients(found.gradients, bp_grads),
        energy_loss_ratio=lockstep.energy_loss_ratio,
        reference=check,
    )
    return new_pc, bp_model, pc_state, bp_state, metrics
