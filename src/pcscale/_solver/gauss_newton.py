"""The Gauss–Newton preconditioner: the exact inverse of the activity Hessian's
Gauss–Newton part, by the Woodbury identity in error coordinates."""

from __future__ import annotations

import math
import numbers
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from .._error_coordinates import OutputJacobian, inverse_precisions, jacobian_at, linearise, woodbury_solve
from ._preconditioner import AbstractPreconditioner, Preconditioning

# Above this many outputs per sample the d_y × d_y systems and the d_y backward passes
# that form J cost more than they save; auto_solver then keeps the depth preconditioner.
GAUSS_NEWTON_MAX_OUTPUTS = 64


class _Memory(eqx.Module):
    jacobian: OutputJacobian
    age: Int[Array, ""]  # Newton steps since J was built


class GaussNewtonPreconditioner(AbstractPreconditioner):
    r"""The inverse of the Gauss–Newton matrix of the energy at the current activities,
    for [`NewtonKrylov`][pcscale.NewtonKrylov].

    In error coordinates (z_l = f_l(z_{l−1}) + ε_l) the energy is
    E(ε) = ½‖ε‖² + λ·ℓ(y, ŷ(ε)) and its Gauss–Newton matrix per sample is
    I + λ·Jᵀ H_ℓ J, with J = ∂ŷ/∂ε (only d_y rows) and H_ℓ the Hessian of the output
    loss. Its inverse is exact and cheap by the Woodbury identity,

    $$(I + \lambda J^\top H_\ell J)^{-1} g = g - \lambda J^\top (I + \lambda H_\ell J J^\top)^{-1} H_\ell J g,$$

    a d_y × d_y solve (valid for the singular cross-entropy H_ℓ). With per-layer
    precisions Π ([`PCLayer`][pcscale.PCLayer]'s `precision`, `log_variance`) the matrix
    is Π + λ·JᵀH_ℓJ, inverted alike with JΠ⁻¹Jᵀ in place of JJᵀ. Mapped back to the
    activities, M⁻¹ = A⁻¹ (I + λJᵀH_ℓJ)⁻¹ A⁻ᵀ, A = ∂ε/∂z: one linear backward pass
    (A⁻ᵀ), the Woodbury solve, and one linear forward pass (A⁻¹). M is the activity
    Hessian without its curvature terms (the output residual times the curvature of ŷ,
    and the hidden errors times the layers' second derivatives), so it is exact for a
    linear network (Newton–Krylov then converges in one step, and that step is the
    closed-form equilibrium) and close to the Hessian near the wide-network limit, where
    those terms are small. Unlike
    [`DepthPreconditioner`][pcscale.DepthPreconditioner] it sees the branches too, so the
    inner iterations do not grow with depth.

    Building it at a point costs one forward pass (the linearisation) and d_y linear
    backward passes (the rows of J, run as one batched pass); each application costs
    two linear passes. All are counted in `vjp_evals`. Memory: J holds d_y activity
    vectors per sample. For many outputs per sample (a language model's vocabulary ×
    tokens) this is too costly; `auto_solver` uses it up to 64 outputs.

    **Arguments:**

    - `refresh`: build J (and H_ℓ) at the first Newton step and rebuild them every this
      many steps, keeping the linearisation A current at every step. Default 5: a solve
      typically takes 3–6 Newton steps and J changes little along it, so this saves
      the d_y backward passes of most steps (measured on the μPC residual MLP of
      docs/inference.md at N = 256, L = 32: the same 5 Newton steps and 11 inner
      iterations with J built once as with J rebuilt at every step, in 40% less time).
      1 rebuilds at every step.
    """

    refresh: int = eqx.field(default=5, kw_only=True, static=True)

    point_dependent: ClassVar[bool] = True

    def __check_init__(self):
        if isinstance(self.refresh, bool) or not isinstance(self.refresh, numbers.Integral):
            raise TypeError(f"`refresh` must be a positive int, got {type(self.refresh).__name__}; e.g. refresh=5.")
        if self.refresh < 1:
            raise ValueError(
                f"`refresh` must be a positive int (rebuild J every that many Newton steps), got "
                f"{self.refresh!r}; e.g. refresh=1."
            )

    def apply(self, model, r):
        raise TypeError(
            "GaussNewtonPreconditioner depends on the activities it is built at: use it with "
            "pcscale.NewtonKrylov(preconditioner=pcscale.GaussNewtonPreconditioner()), which "
            "builds it at every Newton step."
        )

    def init_state(self, model, fn, z) -> _Memory | None:
        if self.refresh == 1 or not tuple(z):
            return None  # rebuilt at every step (or nothing to solve): no memory
        # Placeholders of the right shapes, marked stale, so the first step builds J.
        shapes = jax.eval_shape(lambda z: self._jacobian(model, fn, linearise(model, z), z), z)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return _Memory(zeros, jnp.array(self.refresh, jnp.int32))

    @staticmethod
    def _jacobian(model, fn, state, z) -> OutputJacobian:
        return jacobian_at(state, z, fn.output_curvature(state.prediction), inverse_precisions(model, tuple(z)))

    def at(self, model, fn, z, memory=None) -> Preconditioning:
        if not tuple(z):  # no hidden layer: nothing to precondition
            return Preconditioning(lambda r: r)
        state = linearise(model, z)
        outputs = math.prod(state.prediction.shape[1:])
        if memory is None:
            jacobian, rebuilt = self._jacobian(model, fn, state, z), True
        else:
            rebuilt = memory.age >= self.refresh
            jacobian = jax.lax.cond(rebuilt, lambda: self._jacobian(model, fn, state, z), lambda: memory.jacobian)
        precision = model.output_precision

        def apply(r):
            return state.to_state(woodbury_solve(jacobian, precision, state.transpose(r)))

        new_memory = None if memory is None else _Memory(jacobian, jnp.where(rebuilt, 1, memory.age + 1))
        setup = 1 + jnp.where(rebuilt, outputs, 0)
        return Preconditioning(apply, setup_passes=setup, passes_per_apply=2, state=new_memory)
