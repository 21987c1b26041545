r"""The infinite-width DMFT of deep linear networks under full-batch gradient descent
(docs/background.md §4.8): the loss curve of a μP network without skips as N → ∞ at fixed depth."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._precise import precise_jit
from .._validation import as_float_array, check_finite
from ._dmft_equations import (
    equal_time_ntk,
    first_order_errors,
    jacobi_sweep,
    mean_squared_loss,
    relative_change,
    solve_causally,
)


class DMFTResult(eqx.Module):
    r"""What [`dmft`][pcscale.theory.dmft] returns. Step t means θ_t, before update t.

    - `loss`: 𝓛_DMFT(t) = (1/2P)·Σ_μ Σ_k Δ_t[μ, k]² for t = 0 … T−1, the same MSE
      convention as the loss of the finite network.
    - `errors`: Δ_t = y − f_t, shape (T, P, d_y).
    - `ntk`: the equal-time neural tangent kernel K(t), normalised so that
      Δ_{t+1} = Δ_t − (η/P)·K(t)·Δ_t with Δ_t flattened to P·d_y numbers, the pair
      (μ, k) at index μ·d_y + k. Shape (T, P·d_y, P·d_y): (T, P, P) for one output. At
      initialisation K(0) = L·Kx ⊗ I_{d_y}.
    - `feature_kernels`: Φ_1 … Φ_H, shape (H, T·P, T·P), with the pair (t, μ) at index
      t·P + μ (time-major); `None` unless `return_kernels=True`.
    - `gradient_kernels`: Γ_1 … Γ_H, shape (H, T·d_y, T·d_y), with the pair (t, k) at
      index t·d_y + k: (H, T, T) for one output; `None` unless `return_kernels=True`.
    - `fixed_point_change`: how far the returned kernels are from solving the fixed-point
      equations: the largest entry change of any Φ_ℓ or Γ_ℓ in one Jacobi sweep, relative
      to that kernel's largest entry. After the causal solve it is one check sweep applied
      to the solution (round-off, about 1e-15 in float64); after `iterations=n` sweeps it
      is the change made by the last of them (NaN when n = 0).
    - `converged`: the curve is finite and `fixed_point_change` ≤ `tolerance`.
    """

    loss: Float[Array, " steps"]
    errors: Float[Array, "steps samples outputs"]
    ntk: Float[Array, "steps sample_output sample_output"]
    feature_kernels: Float[Array, "hidden step_sample step_sample"] | None
    gradient_kernels: Float[Array, "hidden step_output step_output"] | None
    fixed_point_change: Float[Array, ""]
    converged: Bool[Array, ""]


# ---------------------------------------------------------------- validation


def _count(value, name: str, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__}); {hint}.")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {value!r}; {hint}.")
    return int(value)


def _positive_float(value, name: str, hint: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a positive float, got {value!r}; {hint}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a positive float, got {value!r} ({type(value).__name__}); {hint}."
        ) from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"`{name}` must be a positive finite float, got {value!r}; {hint}.")
    return number


def _inputs(x, y) -> tuple[Array, Array]:
    x = as_float_array(x, "x")
    y = as_float_array(y, "y")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"`x` must be a non-empty 2-D array (samples P on axis 0, input dimension D on "
            f"axis 1), got shape {x.shape}; flatten each input to a vector, e.g. x.reshape(P, -1)."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] < 1:
        raise ValueError(
            f"`y` must have shape (P,) or (P, d_y) with P = x.shape[0] = {x.shape[0]}, got "
            f"y.shape={y.shape}; pass one target (row) per input (row) of `x`."
        )
    return check_finite(x, "x"), check_finite(y.astype(x.dtype), "y")


@precise_jit
def _solve(x, y, eta, gamma0, tolerance, iterations, depth: int, steps: int, return_kernels: bool,
           causal: bool, exact_steps: bool):
    P, d = y.shape
    T, H = steps, depth - 1
    dtype = x.dtype
    kx = x @ x.T / x.shape[1]
    # The readout rows are independent N(0, 1) vectors and are the top layer's source.
    boundaries = (
        jnp.tile(kx, (T, T)),
        jnp.kron(jnp.ones((T, T), dtype), jnp.eye(d, dtype=dtype)),
        jnp.zeros((T * d, T * P), dtype),
        jnp.tril(jnp.ones((T, T), dtype), k=-1),
    )
    coupling = gamma0 * eta / P
    rate = eta / P

    def curve(phis, gammas):
        ntk = equal_time_ntk(phis, gammas, kx)
        return ntk, first_order_errors(ntk, y, rate)

    if causal:
        phis, gammas, rs, qs, deltas = solve_causally(y, gamma0, coupling, rate, boundaries, H, exact_steps)
        # The check: one more sweep of the fixed-point map must leave the kernels alone.
        new_phis, new_gammas, _, _ = jacobi_sweep(phis, gammas, rs, qs, deltas, boundaries, coupling)
        change = relative_change(phis + gammas, new_phis + new_gammas)
        ntk = equal_time_ntk(phis, gammas, kx)
    else:

        def sweep(_, state):
            phis, gammas, rs, qs, _ = state
            _, deltas = curve(phis, gammas)
            new_phis, new_gammas, new_rs, new_qs = jacobi_sweep(phis, gammas, rs, qs, deltas, boundaries, coupling)
            return new_phis, new_gammas, new_rs, new_qs, relative_change(phis + gammas, new_phis + new_gammas)

        phi_input, gamma_output, no_response, _ = boundaries
        initial = ([phi_input] * H, [gamma_output] * H, [no_response] * H, [no_response] * H,
                   jnp.asarray(jnp.nan, dtype))
        phis, gammas, _, _, change = jax.lax.fori_loop(0, iterations, sweep, initial)
        ntk, deltas = curve(phis, gammas)
    loss = mean_squared_loss(deltas)
    return DMFTResult(
        loss=loss,
        errors=deltas,
        ntk=ntk,
        feature_kernels=jnp.stack(phis) if return_kernels else None,
        gradient_kernels=jnp.stack(gammas) if return_kernels else None,
        fixed_point_change=change,
        converged=jnp.all(jnp.isfinite(loss)) & (change <= tolerance),
    )


def dmft(
    x: Float[ArrayLike, "samples input"],
    y: Float[ArrayLike, " samples *outputs"],
    *,
    depth: int,
    learning_rate: float,
    steps: int,
    gamma0: float = 1.0,
    iterations: int | None = None,
    tolerance: float | None = None,
    exact_steps: bool = False,
    return_kernels: bool = False,
    memory_budget_bytes: float = 2e9,
) -> DMFTResult:
    r"""The infinite-width loss curve of a deep linear μP network trained by full-batch GD.

    This is the dynamical mean-field theory (DMFT) of Bordelon & Pehlevan ("Self-consistent
    dynamical field theory of kernel evolution in wide neural networks"), as docs/background.md
    §4.8 specifies, extended to d_y outputs. It describes the network
    f(x) = (1/(γ0·N))·W_L·(1/√N)·W_{L−1} ⋯ (1/√N)·W_2·(1/√D)·W_1·x with N(0, 1) weights
    (μP, the mean-field parameterisation: `pcscale.MuPC()` or `pcscale.MuP()` without
    skips), trained on ½‖y − f‖² averaged over the batch by full-batch GD with raw-weight
    rate η·γ0²·N, in the limit N → ∞ at fixed depth L.

    **Valid for:** no skips, full-batch GD, MSE loss, linear φ, μP, infinite width at
    fixed depth. Nothing else is modelled: no residual branches, other
    parameterisations, optimisers, nonlinearities or mini-batches. In this limit PC
    computes BP's gradients (S → I, docs/background.md §4.7), so the curve is the theory for both.
    Finite networks fluctuate about it by O(1/√N) from run to run.

    **What is solved.** With Kx = x·xᵀ/D, each hidden layer ℓ = 1 … H carries a feature
    kernel Φ_ℓ over pairs (t, μ), a gradient kernel Γ_ℓ over pairs (t, k) and causal
    response functions, tied together by self-consistency (fixed-point) equations. The
    errors follow from the kernels through the equal-time NTK (Γ(t, t) is d_y × d_y)

    $$K(t) = \Gamma_1(t,t)\otimes K_x + \sum_{\ell=1}^{H-1} \Gamma_{\ell+1}(t,t)\otimes
    \Phi_\ell[(t,\cdot),(t,\cdot)] + I_{d_y}\otimes\Phi_H[(t,\cdot),(t,\cdot)],$$

    $$\Delta_0 = y,\qquad \Delta_{t+1} = \Delta_t - \frac{\eta}{P}\,K(t)\,\Delta_t,\qquad
    \mathcal{L}(t) = \frac{1}{2P}\sum_{\mu,k}\Delta_t[\mu,k]^2 .$$

    For one output this is exactly the recursion of docs/background.md §4.8. For several outputs
    §4.8 keeps one T × T gradient kernel and drops the cross-output ones; those are O(1)
    once the readouts learn (targets of rank > 1), so here Γ_ℓ keeps them. Both agree for
    rank-1 targets. As γ0 → 0 the kernels stay at their initial values and
    K(t) = L·Kx ⊗ I (the lazy limit).

    The error recursion is first order in η: it is exact for gradient flow, but a GD
    step of a deep linear network also moves f by products of the updates of different
    layers, O(γ0·η²) per step. `exact_steps=True` keeps them: Δ_t = y − f_t with f_t read
    from the fields themselves, f_t = (1/γ0)·⟨w(0)·h_H(t)⟩ + (η/P)·Σ_{s<t} Φ_H(t, s)·Δ_s
    (w the readout, h_H the top features), which is the infinite-width limit of discrete
    GD. On the toy task (H = 4, η = 0.025) the first-order curve ends 7% (γ0 = 3) to 12%
    (γ0 = 4) below it; at γ0 = 8 the first-order recursion diverges where finite networks
    (and `exact_steps=True`) catapult: the loss rises, then falls again.

    **How it is solved.** Every response is strictly causal: the kernels at time t depend
    on the errors Δ_s only for s < t. By default (`iterations=None`) the equations are
    solved exactly by forward substitution in time: step t computes time block t of every
    kernel and response, features up the network and gradients down it, then K(t) and
    Δ_{t+1}. Nothing is iterated, so nothing can fail to converge. A final Jacobi sweep
    of the fixed-point map, applied to the solution, checks it (`fixed_point_change`).

    `iterations=n` instead runs n Jacobi sweeps from the lazy kernels (1_T1_Tᵀ ⊗ Kx and
    1_T1_Tᵀ ⊗ I_{d_y}), the scheme of the reference code (n = 10 there). A sweep is exact
    on one more stretch of early times each time, but its iterates for later times can
    grow without bound before they settle: at strong feature learning (toy task, H = 4,
    γ0 = 4, T = 50) they overflow within five sweeps, and even where they do not, 10
    sweeps can be far from the fixed point (γ0 = 3 there: the curve ends 3% off). Use it
    to reproduce the reference; prefer the default.

    Inside both schemes no inverse is formed: with time-major indices each one is of a
    unit lower-triangular matrix, the TP × TP one applied through the push-through
    identity (I − UV)⁻¹U = U(I − VU)⁻¹.

    **Cost:** O(H·d_y·T·(TP)²) time for the causal solve, about two Jacobi sweeps with
    its check (T = 50, P = 20, H = 4: about 0.5 s on a 2-core CPU after a few seconds'
    compilation), and the same per sweep. Memory peaks at about 2H + 2 matrices of
    (TP)² numbers (the check sweep holds old and new feature kernels). A warning is
    raised when the H feature kernels alone, H·(TP)²·itemsize bytes, exceed
    `memory_budget_bytes`. The whole solve is one jitted program; it recompiles only when
    `depth`, `steps`, `return_kernels`, the scheme or the shapes change.

    **Arguments:**

    - `x`: inputs, shape (P, D) (samples on axis 0). The solve runs in `x`'s floating
      dtype (integer input is cast to JAX's default float); use float64 (with
      `jax.config.update("jax_enable_x64", True)`) for accurate curves.
    - `y`: targets, shape (P, d_y), or (P,) for d_y = 1; cast to `x`'s dtype.
    - `depth`: L ≥ 2, the number of weight layers (H = L − 1 hidden layers).
    - `learning_rate`: η > 0, the **unscaled** base rate (the finite network's raw-weight
      rate is η·γ0²·N, as `pcscale.SGD(η)` applies under μP).
    - `steps`: T ≥ 1, the number of GD steps described (losses at θ_0 … θ_{T−1}).
    - `gamma0`: γ0 > 0, the feature-learning strength (the output multiplier holds
      1/γ0). Default 1.
    - `iterations`: `None` (default) for the exact causal solve, or a number n ≥ 0 of
      Jacobi sweeps (0 gives the lazy curve; the reference code uses 10).
    - `tolerance`: the largest `fixed_point_change` that counts as converged. Default
      √ε of the dtype (1.5e-8 in float64, 3.5e-4 in float32); the causal solve reaches
      about 1e-15 in float64.
    - `exact_steps`: read the errors from the fields, exactly as discrete GD steps move
      them, instead of the first-order recursion of §4.8. Default False (the reference
      code's recursion). Needs the causal solve (`iterations=None`).
    - `return_kernels`: also return Φ_ℓ and Γ_ℓ. Default False.
    - `memory_budget_bytes`: warn above this estimate of the kernels' memory. Default 2e9.

    **Returns:** a [`DMFTResult`][pcscale.theory.DMFTResult]. A warning names the cause
    when the curve is not finite or the fixed point was not reached: a learning rate at
    which even the lazy dynamics diverge (η·L·λ_max(Kx)/P ≥ 2); infinite-width dynamics
    that diverge although the lazy ones do not (the NTK grows past 2P/η during training);
    or Jacobi sweeps (`iterations=n`) that did not converge or overflowed.
    """
    x, y = _inputs(x, y)
    depth = _count(depth, "depth", 2, "pass the number of weight layers L (H = L − 1 ≥ 1 hidden layers)")
    steps = _count(steps, "steps", 1, "pass the number T of GD steps to describe, e.g. steps=50")
    if iterations is not None:
        iterations = _count(
            iterations, "iterations", 0,
            "pass None for the exact causal solve, or a number of Jacobi sweeps ≥ 0, e.g. 10",
        )
    if not isinstance(exact_steps, bool):
        raise TypeError(f"`exact_steps` must be True or False, got {exact_steps!r}.")
    if exact_steps and iterations is not None:
        raise ValueError(
            f"`exact_steps=True` needs the causal solve, got iterations={iterations}: the Jacobi sweeps "
            "reproduce the reference code, whose errors follow the first-order recursion; pass iterations=None."
        )
    eta = _positive_float(learning_rate, "learning_rate", "pass the unscaled base rate η, e.g. 0.025")
    gamma0 = _positive_float(gamma0, "gamma0", "pass γ0 > 0; small values give the lazy limit")
    if tolerance is None:
        tolerance = math.sqrt(float(jnp.finfo(x.dtype).eps))
    tolerance = _positive_float(tolerance, "tolerance", "e.g. 1e-8, or None for √ε of the dtype")
    budget = _positive_float(memory_budget_bytes, "memory_budget_bytes", "e.g. 2e9 for 2 GB")
    if not isinstance(return_kernels, bool):
        raise TypeError(f"`return_kernels` must be True or False, got {return_kernels!r}.")

    P = x.shape[0]
    tp = steps * P
    estimate = (depth - 1) * tp**2 * x.dtype.itemsize
    if estimate > budget:
        warnings.warn(
            f"dmft holds {depth - 1} feature kernels of (steps·P)² = {tp}² numbers, {estimate / 1e9:.3g} "
            f"GB (and peaks at about twice that), above memory_budget_bytes={budget:.3g}; reduce "
            "`steps` or the number of samples, or raise `memory_budget_bytes` if the memory is there.",
            stacklevel=2,
        )
    # Rates, γ0, the tolerance and the sweep count are traced, so changing them does not recompile.
    numbers = (jnp.asarray(eta, x.dtype), jnp.asarray(gamma0, x.dtype), jnp.asarray(tolerance, x.dtype),
               jnp.asarray(0 if iterations is None else iterations))
    result = _solve(x, y, *numbers, depth, steps, return_kernels, iterations is None, exact_steps)
    if not isinstance(result.loss, jax.core.Tracer):
        message = _diagnosis(result, x, eta=eta, gamma0=gamma0, depth=depth, iterations=iterations, tolerance=tolerance,
                             exact_steps=exact_steps)
        if message is not None:
            warnings.warn(message, stacklevel=2)
    return result


def _diagnosis(result: DMFTResult, x, *, eta: float, gamma0: float, depth: int, iterations, tolerance: float,
               exact_steps: bool) -> str | None:
    """Why the curve is not finite or the fixed point not reached; None when all is well."""
    loss = np.asarray(result.loss)
    change = float(result.fixed_point_change)
    P = x.shape[0]
    kx = np.asarray(x, float) @ np.asarray(x, float).T / x.shape[1]
    lazy = eta * depth * float(np.linalg.eigvalsh(kx)[-1]) / P
    stable = f"the lazy dynamics are stable, η·L·λ_max(Kx)/P = {lazy:.3g} < 2"
    if not np.all(np.isfinite(loss)):
        if lazy >= 2:
            return (
                f"the DMFT loss curve is not finite because learning_rate={eta} is too large for "
                f"depth={depth} on these inputs: even the lazy dynamics diverge, as η·L·λ_max(Kx)/P = "
                f"{lazy:.3g} ≥ 2; lower it below {2 * eta / lazy:.3g}."
            )
        if iterations is not None:
            return (
                f"the DMFT loss curve is not finite because the fixed-point iteration diverged: the "
                f"iterates of {iterations} Jacobi sweeps overflowed. The learning rate is not the cause "
                f"({stable}); use iterations=None, the exact causal solve, which does not iterate."
            )
        if exact_steps:
            return (
                f"the DMFT loss curve is not finite: the infinite-width GD dynamics themselves diverge at "
                f"learning_rate={eta} with gamma0={gamma0}, although {stable}; lower learning_rate or gamma0."
            )
        sharpness = [
            eta * float(np.linalg.eigvalsh(kernel)[-1]) / P
            for kernel in np.asarray(result.ntk)
            if np.all(np.isfinite(kernel))
        ]
        past = [t for t, value in enumerate(sharpness) if value > 2]
        where = f", first at step {past[0]}" if past else ""
        return (
            f"the DMFT loss curve is not finite: the first-order error recursion diverges at "
            f"learning_rate={eta} with gamma0={gamma0}, although {stable}. Feature learning grows the NTK "
            f"until η·λ_max(K(t))/P > 2{where}. Finite networks can still train there, catapulting "
            "through terms of higher order in η that the recursion leaves out: pass exact_steps=True "
            "to keep them, or lower learning_rate or gamma0."
        )
    if not change <= tolerance:
        if iterations is None:
            return (
                f"the causal DMFT solve is self-consistent only to {change:.3g} (one more fixed-point "
                f"sweep moves the kernels by that much relative to their size), above tolerance="
                f"{tolerance:.3g}: round-off has grown; solve in float64."
            )
        if iterations == 0:
            return None  # the lazy curve, asked for as such
        return (
            f"the fixed-point iteration did not converge after {iterations} Jacobi sweeps: the last "
            f"one moved the kernels by {change:.3g} relative to their size, above tolerance={tolerance:.3g}; "
            "raise `iterations`, or use iterations=None, the exact causal solve."
        )
    return None
