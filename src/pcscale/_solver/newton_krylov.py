"""Truncated Newton: inner conjugate gradients on Hessian-vector products, globalised
by a backtracking line search."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Bool, Float

from ._base import cost, to_float
from ._krylov import conjugate_gradient
from ._preconditioner import AbstractKrylovSolver


class _NewtonState(eqx.Module):
    tolerance: Float[Array, ""]
    stalled: Bool[Array, ""]
    preconditioner: Any  # what a preconditioner with memory keeps between steps (or None)
    # The forcing term's memory: the previous step's gradient norm, the norm its linear
    # model predicted after the step (NaN when the step was backtracked or none was
    # taken yet) and its inner tolerance η.
    previous_norm: Float[Array, ""]
    predicted_norm: Float[Array, ""]
    previous_eta: Float[Array, ""]


# The inner CG gives up when its residual has not fallen below (1 − _INNER_MARGIN) times
# its best value for _INNER_WINDOW iterations: at the dtype's rounding floor the
# recurrence stops reducing it, and without this test each Newton step would spend its
# whole inner budget there. Healthy CG on κ ≈ 10⁴ gains far more than 1% in 50 steps.
_INNER_WINDOW = 50
_INNER_MARGIN = 1e-2


class NewtonKrylov(AbstractKrylovSolver, max_steps=100):
    r"""Truncated (inexact) Newton with conjugate-gradient inner solves.

    Each step linearises the activity gradient at the current point (`jax.linearize`,
    forward-over-reverse, so a Hessian-vector product costs about two gradients and no
    Hessian is ever formed), solves H·d = −∇F approximately by conjugate gradients, and
    takes a step along d with a backtracking line search (t = 1, ½, ¼ …).

    The trials follow the curve z(t) = z(ε̄ + t·δ) in error coordinates (z_l =
    f_l(z_{l−1}) + ε_l; δ = A·d the errors' change along d, A = ∂ε/∂z), whose tangent
    at t = 0 is d: each trial is one forward pass that moves every error by t·δ and lets
    the layers above follow. On the straight line z + t·d the errors of every layer
    change nonlinearly in t; along the curve only the output loss does. Measured on the
    tanh μPC residual MLP of docs/inference.md (B = 64, rtol 1e-6, with the Gauss–Newton
    preconditioner), this cut the Newton steps at N = 64 from 20 to 13 (L = 32) and from
    26 to 19 (L = 64), and at N = 256, L = 64 from 8 to 6; both paths agree to first order,
    so the quadratic convergence near the equilibrium is kept.

    - The inner solve stops at relative residual η_k (Eisenstat and Walker's "choice
      1" forcing term): η_0 = `forcing`, then η_k = |‖g_k‖ − ‖g_{k−1} + H·d_{k−1}‖| /
      ‖g_{k−1}‖, how far the gradient landed from what the last step's quadratic model
      predicted, capped at `forcing` (and at `forcing` again after a backtracked step).
      So the inner solve is loose while the model is poor (far from the equilibrium, or
      a narrow network) and tight once it is good, where one more Krylov iteration is
      cheaper than one more Newton step; it never asks for more than a tenth of the
      loop's own tolerance. Measured on the tanh μPC residual MLP of docs/inference.md
      (B = 64, float64, rtol 1e-6, Gauss–Newton preconditioner), against the earlier
      η_k = min(`forcing`, √(‖g_k‖/‖g_0‖)): a warm start from the previous training
      step's equilibrium certifies in 2 Newton steps instead of 3 at N = 64 and 256,
      L = 8 to 64, and a cold start takes 1 step fewer at N = 256, L ∈ {8, 16, 64}.
    - Negative curvature (possible for nonlinear networks away from equilibrium) ends the
      inner solve at the last good iterate (Steihaug); at the very first inner step the
      direction falls back to −M⁻¹∇F (−∇F without a preconditioner).
    - A trial is accepted when it satisfies the Armijo condition
      F(z + t·d) ≤ F(z) + c·t·∇Fᵀd, or, only once the decrease that condition asks for is
      below the energy's rounding error (64·eps·|F|), when the gradient norm decreased and
      the energy did not grow beyond rounding.

    On a linear network each Newton step restarts the inner CG from scratch, so it needs
    a few outer steps and somewhat more products than
    [`ConjugateGradient`][pcscale.ConjugateGradient] (measured: 459 against 376 at depth
    16), which is the better choice there. `jax.linearize` recomputes the gradient at z,
    so each step counts one gradient besides its line-search trials.

    **Arguments** (all keyword-only):

    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(initial value). Default
      rtol = 1e-6.
    - `max_steps`: the budget of Newton steps. Default 100.
    - `max_inner_steps`: CG iterations per Newton step. Default 1 000.
    - `forcing`: the largest inner relative tolerance η. Default 0.1.
    - `armijo`: the sufficient-decrease constant c. Default 1e-4.
    - `max_backtracks`: line-search trials before the step is abandoned and the run
      ends with `RESULTS.stalled`. Default 30.
    - `stall_window`, `max_time`, `progress`: as for every solver
      ([`AbstractInferenceSolver`][pcscale.AbstractInferenceSolver]); the default
      stall window is 3 Newton steps, each needing a 10% lower residual or a lower
      energy. The inner CG likewise gives up when its residual has not fallen by 1% in
      50 iterations, so a solve at the rounding floor ends `stalled` after a few cheap
      steps instead of spending `max_steps` × `max_inner_steps` products.
    - `divergence_factor`: as for [`GradientDescent`][pcscale.GradientDescent].
    - `preconditioner`: None (default) or an
      [`AbstractPreconditioner`][pcscale.AbstractPreconditioner] for the inner CG, e.g.
      [`GaussNewtonPreconditioner()`][pcscale.GaussNewtonPreconditioner] (rebuilt at
      every Newton step; the fastest choice for networks with few outputs) or
      [`DepthPreconditioner()`][pcscale.DepthPreconditioner] for residual networks.
    """

    max_inner_steps: int = eqx.field(default=1_000, kw_only=True)
    forcing: float = eqx.field(default=0.1, converter=to_float, kw_only=True)
    armijo: float = eqx.field(default=1e-4, converter=to_float, kw_only=True)
    max_backtracks: int = eqx.field(default=30, kw_only=True)

    # Newton steps are expensive and converge fast: three steps that neither cut the
    # residual by 10% nor lower the energy beyond rounding mean it can go no further.
    default_stall_window: ClassVar[int] = 3
    stall_margin: ClassVar[float] = 0.1
    step_cost: ClassVar[int] = 100  # an inner Krylov solve: tens to hundreds of products

    def __check_init__(self):
        for name in ("max_inner_steps", "max_backtracks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}; e.g. {name}=100.")
        if not (isinstance(self.forcing, float) and 0 < self.forcing < 1):
            raise ValueError(f"`forcing` must be a float in (0, 1), got {self.forcing!r}; e.g. 0.1.")
        if not (isinstance(self.armijo, float) and 0 < self.armijo < 0.5):
            raise ValueError(f"`armijo` must be a float in (0, 0.5), got {self.armijo!r}; e.g. 1e-4.")

    def init(self, model, fn, z, energy, grad, tolerance):
        memory = None if self.preconditioner is None else self.preconditioner.init_state(model, fn, z)
        norm = otu.tree_norm(grad)
        nan = jnp.full((), jnp.nan, norm.dtype)
        return _NewtonState(tolerance, jnp.array(False), memory, norm, nan, jnp.asarray(self.forcing, norm.dtype))

    def _eta(self, norm, state):
        """The inner relative tolerance: Eisenstat and Walker's choice 1, how far the
        gradient norm landed from what the previous step's linear model predicted,
        relative to the previous norm (small where the quadratic model is good, so the
        inner solve is tight exactly when a tight solve pays), safeguarded against
        falling faster than η_prev^φ while η_prev is large, capped at `forcing`."""
        previous = jnp.where(state.previous_norm > 0, state.previous_norm, 1.0)
        eta = jnp.abs(norm - state.predicted_norm) / previous
        golden = state.previous_eta ** ((1 + 5**0.5) / 2)
        eta = jnp.where(golden > 0.1, jnp.maximum(eta, golden), eta)
        # No prediction (the first step, or a backtracked one): the loose default.
        return jnp.where(jnp.isfinite(eta), jnp.minimum(self.forcing, eta), self.forcing)

    def step(self, model, fn, z, energy, grad, state):
        _, hvp = jax.linearize(lambda u: fn(u)[1], z)
        norm = otu.tree_norm(grad)
        eta = self._eta(norm, state)
        inner_tolerance = jnp.maximum(eta * norm, 0.1 * state.tolerance)
        preconditioning = self.preconditioning_at(model, fn, z, state.preconditioner)
        inner = conjugate_gradient(
            hvp, otu.tree_scale(-1.0, grad), tolerance=inner_tolerance, max_steps=self.max_inner_steps,
            precondition=preconditioning.apply, negative_curvature_exit=True,
            stall_window=_INNER_WINDOW, stall_margin=_INNER_MARGIN,
        )
        direction = inner.solution
        slope = otu.tree_vdot(grad, direction)
        rounding = 64 * jnp.finfo(energy.dtype).eps * jnp.abs(energy)
        # Trials along the error-coordinate curve through z with tangent `direction`
        # (see the class docstring); one linearised pass to set it up.
        path = fn.trial_path(model, z, direction)  # a straight line when `z` are the errors

        def cond(carry):
            *_, accepted, tries = carry
            return ~accepted & (tries < self.max_backtracks)

        def body(carry):
            t, _, _, _, _, tries = carry
            trial = path(t)
            trial_energy, trial_grad = fn(trial)
            trial_norm = otu.tree_norm(trial_grad)
            finite = jnp.isfinite(trial_energy) & jnp.isfinite(trial_norm)
            armijo = trial_energy <= energy + self.armijo * t * slope
            # Once the decrease Armijo asks for is below the energy's rounding error, the
            # energy cannot judge the step: accept it if the gradient norm fell and the
            # energy did not rise beyond rounding.
            below_rounding = self.armijo * t * jnp.abs(slope) <= rounding
            flat = below_rounding & (trial_norm < norm) & (trial_energy <= energy + rounding)
            accepted = finite & (armijo | flat)
            return 0.5 * t, trial, trial_energy, trial_grad, accepted, tries + 1

        one = jnp.ones((), energy.dtype)
        carry = (one, z, energy, grad, jnp.array(False), jnp.array(0, jnp.int32))
        _, trial, trial_energy, trial_grad, accepted, tries = jax.lax.while_loop(cond, body, carry)
        new_z = otu.tree_where(accepted, trial, z)
        new_energy = jnp.where(accepted, trial_energy, energy)
        new_grad = otu.tree_where(accepted, trial_grad, grad)
        # A full step's linear model predicts ‖∇F + H·d‖, the inner solve's residual.
        full = accepted & (tries == 1)
        predicted = jnp.where(full, inner.residual, jnp.nan)
        state = _NewtonState(state.tolerance, ~accepted, preconditioning.state, norm, predicted, eta)
        # The preconditioner is applied once per inner iteration and once at the start.
        passes = preconditioning.setup_passes + preconditioning.passes_per_apply * (inner.steps + 1)
        # Besides: the pass that sets up the path, and each trial's forward pass along it.
        used = cost(gradients=1 + tries, hvps=inner.steps, vjps=passes + path.passes + path.trial_passes * tries)
        return new_z, new_energy, new_grad, state, used

    def stalled(self, state):
        return state.stalled
