"""The one training-step kernel: an inference method's equilibrium, the PC weight gradient
there and a guarded optimiser update; the BP twin's step; and the alignment of the two.
`pc_step`, `bp_step`, `train`, the experiments' cells, closed-form training and the
coordinate check all run these functions (inside their own `jit`)."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jaxtyping import Array, Bool, Float

from ._compare import GradientAlignment, compare_gradients, equilibrium_comparison
from ._custom_types import Activities
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


# The guard's reductions (‖∇‖ and the finiteness of the new weights and optimiser state)
# sum leaves of one shape and dtype together in runs of up to _RUN elements (1 MiB of
# float32): many small leaves then cost one kernel per run instead of one each, and a
# large leaf stays one read of its own, which the compiler places next to its producer.
# On a 2-core CPU (benchmarks/step_time.py, cases a and b) the guard then costs about 5%
# of a plain jitted optax step; an elementwise test and a boolean reduction per leaf
# (the previous check) cost 15-20%, one sum per leaf 2-3% more than runs on the small
# MLP, one sum per shape 3-5% more on the wide one.
_RUN = 1 << 18


def _runs(leaves, floor=None) -> list[list]:
    """`leaves` in runs of one shape and dtype (cast up to `floor` if narrower) of at most
    `_RUN` elements together; a larger leaf is a run of its own."""
    groups: dict[tuple, list[list]] = {}
    for leaf in leaves:
        dtype = leaf.dtype if floor is None else jnp.promote_types(leaf.dtype, floor)
        runs = groups.setdefault((leaf.shape, dtype), [[]])
        if runs[-1] and (len(runs[-1]) + 1) * leaf.size > _RUN:
            runs.append([])
        runs[-1].append(leaf.astype(dtype))
    return [run for runs in groups.values() for run in runs]


def _all_finite(*trees) -> Bool[Array, ""]:
    """Whether every inexact leaf of `trees` is finite, from one sum per run of leaves (in
    at least float32): a NaN or ±inf anywhere makes its run's sum NaN or ±inf, so nothing
    non-finite passes, for one read of each leaf. Finite leaves fail only if a run's sum
    overflows the float range (|Σ| ≳ 3e38 in float32), far past any trainable scale: such
    a step is refused, as one whose gradient norm overflows already is."""
    runs = _runs(jax.tree.leaves(eqx.filter(trees, eqx.is_inexact_array)), jnp.float32)
    finite = [jnp.isfinite(jnp.sum(functools.reduce(jnp.add, run))) for run in runs]
    return functools.reduce(jnp.logical_and, finite, jnp.array(True))


def _norm(tree) -> Float[Array, ""]:
    """‖tree‖₂ (`optax.tree_utils.tree_norm` up to the order of the sum), its squares
    summed in the runs of `_all_finite`."""
    squares = [jnp.sum(functools.reduce(jnp.add, [jnp.real(leaf * jnp.conj(leaf)) for leaf in run]))
               for run in _runs(jax.tree.leaves(tree))]
    return jnp.sqrt(functools.reduce(jnp.add, squares)) if squares else jnp.zeros(())


def proposed_update(model, opt_state, grads, optimiser, ok):
    """The optimiser update and whether it may be applied: `ok` holds and the gradient,
    the new weights and the new optimiser state are all finite (an infinite learning
    rate turns a finite gradient into non-finite weights). Nothing is undone here: the
    caller keeps its old weights and state when the update is refused (`guarded_update`
    inside the program, `bp_step` on the host). Returns the new model and state, ‖grads‖
    and whether the update may be applied."""
    grads = eqx.filter(grads, eqx.is_array)
    grad_norm = _norm(grads)
    params = eqx.filter(model, eqx.is_array)
    updates, new_state = optimiser.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    accept = jnp.isfinite(grad_norm) & ok & _all_finite(eqx.filter(model, eqx.is_array), new_state)
    return model, new_state, grad_norm, accept


def guarded_update(model, opt_state, grads, optimiser, ok):
    """Optimiser update, applied only if `ok` holds and the gradient, the new weights and
    the new optimiser state are all finite (`proposed_update`); a refused step keeps the
    old weights and optimiser state. Returns the new model and state, ‖grads‖ and whether
    the update was applied."""
    new_model, new_state, grad_norm, accept = proposed_update(model, opt_state, grads, optimiser, ok)
    keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    params = eqx.filter(model, eqx.is_array)
    model = eqx.combine(jax.tree.map(keep, eqx.filter(new_model, eqx.is_array), params), model)
    opt_state = jax.tree.map(lambda new, old: keep(new, old) if eqx.is_array(new) else new, new_state, opt_state)
    return model, opt_state, grad_norm, accept


def pc_update(model, opt_state, x, y, optimiser, method: AbstractInferenceMethod, allow_diverged: bool,
              sharding: NamedSharding | None = None, z0: Activities | None = None) -> tuple:
    """One PC step on validated inputs: `method`'s equilibrium (from the validated warm
    start `z0` if given), then the guarded update with its weight gradient (refused after
    diverged inference unless `allow_diverged`).
    Returns `(model, opt_state, equilibrium, PCStepMetrics)`."""
    # Only a warm start passes `z0`, so a method written before warm starts still works.
    found: Equilibrium = (method.equilibrium(model, x, y, sharding) if z0 is None
                          else method.equilibrium(model, x, y, sharding, z0=z0))
    ok = jnp.array(True) if allow_diverged else found.stats.result != RESULTS.diverged
    model, opt_state, grad_norm, accept = guarded_update(model, opt_state, found.gradients, optimiser, ok)
    metrics = PCStepMetrics(found.energy, found.loss, grad_norm, found.stats, accept, found.diagnostics)
    return model, opt_state, found, metrics


def bp_update(model, opt_state, x, y, optimiser, loss_and_gradients=loss_gradients, *, keep_refused: bool = True
              ) -> tuple:
    """One BP step on validated inputs (a non-finite gradient is skipped). Returns
    `(model, opt_state, gradients, BPStepMetrics)`. With `keep_refused=False` a refused
    update is not undone in the program: the returned model and state are the proposed
    ones, and the caller must keep its own when `metrics.updated` is False (`bp_step`
    decides on the host, which saves a select over every weight and state leaf)."""
    loss, grads = loss_and_gradients(model, x, y)
    update = guarded_update if keep_refused else proposed_update
    model, opt_state, grad_norm, accept = update(model, opt_state, grads, optimiser, jnp.array(True))
    return model, opt_state, grads, BPStepMetrics(loss, grad_norm, accept)


def comparison_update(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, method: AbstractInferenceMethod,
                      reference: AbstractInferenceMethod | None, allow_diverged: bool,
                      sharding: NamedSharding | None = None, z0: Activities | None = None) -> tuple:
    """One step of a PC model and its BP twin on validated inputs, every metric at θ_t:
    the PC step, the BP twin's step, the PC gradient against ∇𝓛 at the same weights
    (lockstep) and against the twin's (trajectory), and, with a `reference` method, the
    PC step checked against its equilibrium. The loss and ∇𝓛 come from the cheapest
    exact evaluation the methods know (`loss_and_gradients`). The PC solve starts from
    `z0` (a warm start) if given; the reference's does not. Returns
    `(pc_model, bp_model, pc_state, bp_state, ComparisonMetrics, activities)`, the last
    the PC equilibrium's activities (None for a method that never forms them), for the
    next step's warm start."""
    loss_and_gradients = (method if reference is None else reference).loss_and_gradients
    new_pc, pc_state, found, pc = pc_update(pc_model, pc_state, x, y, optimiser, method, allow_diverged, sharding,
                                            z0)
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
    return new_pc, bp_model, pc_state, bp_state, metrics, found.activities
