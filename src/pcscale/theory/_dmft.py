r"""The infinite-width DMFT of deep linear networks under full-batch gradient descent
(science.md §4.8): the loss curve of a μP network without skips as N → ∞ at fixed depth."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, ArrayLike, Float

from .._model import FULL_PRECISION
from .._validation import as_float_array, check_finite


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
    - `fixed_point_change`: max_t |𝓛(t) after the last fixed-point iteration − 𝓛(t)
      before it|, a convergence diagnostic (NaN when `iterations=0`).
    """

    loss: Float[Array, " steps"]
    errors: Float[Array, "steps samples outputs"]
    ntk: Float[Array, "steps sample_output sample_output"]
    feature_kernels: Float[Array, "hidden step_sample step_sample"] | None
    gradient_kernels: Float[Array, "hidden step_output step_output"] | None
    fixed_point_change: Float[Array, ""]


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


# ------------------------------------------------------------------ maths
#
# Notation in this section (maths-heavy, so the paper's letters): T steps, P samples,
# d outputs, H hidden layers. Feature-side objects are indexed by pairs (t, μ) at t·P + μ,
# gradient-side ones by pairs (t, k) at t·d + k. Time-major order makes every causal
# operator below (strictly) lower triangular.
#
# Departure from science.md §4.8 for d > 1: there Γ_ℓ is one T × T kernel shared by all
# outputs (cross-output kernels taken as zero). The readouts of different outputs learn
# along shared features, so g^k·g^k'/N (k ≠ k') is O(1) at infinite width whenever the
# target matrix has rank > 1; leaving it out was off by ~27% from finite-width networks
# (N = 512 … 8192, no trend in N). Here Γ_ℓ is the full (T·d) × (T·d) kernel over (t, k),
# which gives §4.8 exactly when d = 1 (and for rank-1 targets).


def _ntk(phis, gammas, kx):
    """K(t) for all t, shape (T, P·d, P·d) with (μ, k) at μ·d + k:
    K = Γ_1(t,t) ⊗ Kx + Σ_{ℓ<H} Γ_{ℓ+1}(t,t) ⊗ Φ_ℓ(t,t) + I_d ⊗ Φ_H(t,t)."""
    P = kx.shape[0]
    T = phis[0].shape[0] // P
    d = gammas[0].shape[0] // T
    steps = jnp.arange(T)
    feature = [jnp.broadcast_to(kx, (T, P, P))]
    feature += [phi.reshape(T, P, T, P)[steps, :, steps, :] for phi in phis]
    gradient = [gamma.reshape(T, d, T, d)[steps, :, steps, :] for gamma in gammas]
    gradient.append(jnp.broadcast_to(jnp.eye(d, dtype=kx.dtype), (T, d, d)))
    kernel = jnp.einsum("ltmn,ltkj->tmknj", jnp.stack(feature), jnp.stack(gradient))
    return kernel.reshape(T, P * d, P * d)


def _errors(ntk, y, rate):
    """Δ_0 = y and Δ_{t+1} = Δ_t − (η/P)·K(t)·Δ_t; returns Δ_0 … Δ_{T−1}, (T, P, d)."""

    def step(delta, kernel):
        return delta - rate * kernel @ delta, delta

    _, deltas = jax.lax.scan(step, y.reshape(-1), ntk)
    return deltas.reshape(-1, *y.shape)


def _loss(deltas):
    return 0.5 * jnp.sum(deltas**2, axis=(1, 2)) / deltas.shape[1]


def _layer(phi_prev, r_prev, gamma_next, q_next, deltas, coupling, causal):
    """One layer's Jacobi update: new (Φ_ℓ, Γ_ℓ, R_ℓᵀ, Q_ℓ) from the neighbours' old values.

    With c = γ0·η/P, the operators are U[(t,μ),(s,k)] = R_{ℓ−1} + c·1[s<t]·Σ_ν
    Φ_{ℓ−1}[(t,μ),(s,ν)]·Δ_s[ν,k] and V[(t,k),(s,μ)] = Q_{ℓ+1} + c·1[s<t]·Σ_k'
    Γ_{ℓ+1}[(t,k),(s,k')]·Δ_s[μ,k']. Then Π = (I − UV)⁻¹, R = ΠU, Ψ = (I − VU)⁻¹,
    Q = ΨV, Φ_ℓ = ΠΦ_{ℓ−1}Πᵀ + RΓ_{ℓ+1}Rᵀ and
    Γ_ℓ = ΨΓ_{ℓ+1}Ψᵀ + QΦ_{ℓ−1}Qᵀ.

    UV is TP × TP but has rank ≤ T·d, so Π is applied through the push-through identity
    ΠU = U(I − VU)⁻¹ = UΨ (then Π = I + RV): every solve is with the one T·d × T·d unit
    lower-triangular matrix I − VU, and a sweep costs O(d·T·(TP)²) per layer, not O((TP)³).
    """
    T, P, d = deltas.shape
    dtype = deltas.dtype
    # E[(s,k),(s',ν)] = δ_ss'·Δ_s[ν,k] turns sums over samples at equal times into products.
    e = (jnp.eye(T, dtype=dtype)[:, None, :, None] * jnp.swapaxes(deltas, 1, 2)[:, :, None, :])
    e = e.reshape(T * d, T * P)
    causal_td = jnp.kron(causal, jnp.ones((d, d), dtype))
    v = q_next + (coupling * causal_td * gamma_next) @ e
    # Φ is symmetric, so E·Φ holds the sums Σ_ν Φ[(t,μ),(s,ν)]·Δ_s[ν,k] that drive U;
    # stacking it under V reads the big Φ only once.
    v_phi, e_phi = jnp.split(jnp.concatenate([v, e]) @ phi_prev, 2)
    u_t = r_prev + coupling * (causal.T[:, None, :, None] * e_phi.reshape(T, d, T, P)).reshape(T * d, T * P)

    psi_inverse = jnp.eye(T * d, dtype=dtype) - v @ u_t.T
    # Rᵀ = (UΨ)ᵀ = Ψᵀ Uᵀ: a transposed unit-lower-triangular solve.
    r_t = solve_triangular(psi_inverse, u_t, lower=True, trans="T", unit_diagonal=True)
    middle = v_phi @ v.T + gamma_next  # V Φ Vᵀ + Γ_{ℓ+1}
    # With Π = I + R V and B = V Φ: Π Φ Πᵀ + R Γ Rᵀ = Φ + R B + Bᵀ Rᵀ + R·middle·Rᵀ.
    # Splitting the last term evenly gives Φ + R C + Cᵀ Rᵀ with C = B + ½·middle·Rᵀ,
    # which one product [R, Cᵀ]·[C; Rᵀ] forms.
    c = v_phi + 0.5 * middle @ r_t
    phi = phi_prev + jnp.concatenate([r_t, c]).T @ jnp.concatenate([c, r_t])
    # Γ_ℓ = Ψ (Γ_{ℓ+1} + V Φ Vᵀ) Ψᵀ; one solve gives both Q = ΨV and Ψ·middle.
    both = solve_triangular(psi_inverse, jnp.concatenate([v, middle], axis=1), lower=True, unit_diagonal=True)
    q, half = both[:, : T * P], both[:, T * P :]
    gamma = solve_triangular(psi_inverse, half.T, lower=True, unit_diagonal=True).T
    return phi, gamma, r_t, q


@eqx.filter_jit
def _solve(x, y, eta, gamma0, iterations, depth: int, steps: int, return_kernels: bool):
    with jax.default_matmul_precision(FULL_PRECISION):
        P, d = y.shape
        T, H = steps, depth - 1
        dtype = x.dtype
        kx = x @ x.T / x.shape[1]
        phi_input = jnp.tile(kx, (T, T))
        # The readout rows are independent N(0, 1) vectors and are the top layer's source.
        gamma_output = jnp.kron(jnp.ones((T, T), dtype), jnp.eye(d, dtype=dtype))
        no_response = jnp.zeros((T * d, T * P), dtype)
        causal = jnp.tril(jnp.ones((T, T), dtype), k=-1)
        coupling = gamma0 * eta / P
        rate = eta / P

        def curve(phis, gammas):
            ntk = _ntk(phis, gammas, kx)
            return ntk, _errors(ntk, y, rate)

        def sweep(_, state):
            phis, gammas, rs, qs, _ = state
            _, deltas = curve(phis, gammas)
            # Neighbours: Φ_0 and R_0 = 0 below layer 1, Γ_{H+1} and Q_{H+1} = 0 above layer H.
            below_phi = [phi_input] + phis[:-1]
            below_r = [no_response] + rs[:-1]
            above_gamma = gammas[1:] + [gamma_output]
            above_q = qs[1:] + [no_response]
            # A Python loop, not vmap: batched triangular solves (LAPACK under a parallel
            # batch map) deadlocked inside a lax loop on a 2-core CPU with jax 0.10.
            updated = [
                _layer(below_phi[l], below_r[l], above_gamma[l], above_q[l], deltas, coupling, causal)
                for l in range(H)
            ]
            new_phis, new_gammas, new_rs, new_qs = (list(parts) for parts in zip(*updated))
            return new_phis, new_gammas, new_rs, new_qs, _loss(deltas)

        initial = ([phi_input] * H, [gamma_output] * H, [no_response] * H, [no_response] * H,
                   jnp.full((T,), jnp.nan, dtype))
        phis, gammas, _, _, previous_loss = jax.lax.fori_loop(0, iterations, sweep, initial)
        ntk, deltas = curve(phis, gammas)
        loss = _loss(deltas)
        return DMFTResult(
            loss=loss,
            errors=deltas,
            ntk=ntk,
            feature_kernels=jnp.stack(phis) if return_kernels else None,
            gradient_kernels=jnp.stack(gammas) if return_kernels else None,
            fixed_point_change=jnp.max(jnp.abs(loss - previous_loss)),
        )


def dmft(
    x: Float[ArrayLike, "samples input"],
    y: Float[ArrayLike, "samples *outputs"],
    *,
    depth: int,
    learning_rate: float,
    steps: int,
    gamma0: float = 1.0,
    iterations: int = 10,
    return_kernels: bool = False,
    memory_budget_bytes: float = 2e9,
) -> DMFTResult:
    r"""The infinite-width loss curve of a deep linear μP network trained by full-batch GD.

    This is the dynamical mean-field theory (DMFT) of Bordelon & Pehlevan ("Self-consistent
    dynamical field theory of kernel evolution in wide neural networks"), as science.md
    §4.8 specifies, extended to d_y outputs. It describes the network
    f(x) = (1/(γ0·N))·W_L·(1/√N)·W_{L−1} ⋯ (1/√N)·W_2·(1/√D)·W_1·x with N(0, 1) weights
    (μP, the mean-field parameterisation: `pcscale.MuPC()` or `pcscale.MuP()` without
    skips), trained on ½‖y − f‖² averaged over the batch by full-batch GD with raw-weight
    rate η·γ0²·N, in the limit N → ∞ at fixed depth L.

    **Valid for:** no skips, full-batch GD, MSE loss, linear φ, μP, infinite width at
    fixed depth. Nothing else is modelled: no residual branches, other
    parameterisations, optimisers, nonlinearities or mini-batches. In this limit PC
    computes BP's gradients (S → I, science.md §4.7), so the curve is the theory for both.
    Finite networks fluctuate about it by O(1/√N) from run to run.

    **What is solved.** With Kx = x·xᵀ/D, each hidden layer ℓ = 1 … H carries a feature
    kernel Φ_ℓ over pairs (t, μ), a gradient kernel Γ_ℓ over pairs (t, k) and causal
    response functions. They start at Φ_ℓ = 1_T1_Tᵀ ⊗ Kx and Γ_ℓ = 1_T1_Tᵀ ⊗ I_{d_y}, and
    `iterations` Jacobi sweeps of the self-consistency equations update them. The errors
    follow from the kernels through the equal-time NTK (Γ(t, t) is d_y × d_y)

    $$K(t) = \Gamma_1(t,t)\otimes K_x + \sum_{\ell=1}^{H-1} \Gamma_{\ell+1}(t,t)\otimes
    \Phi_\ell[(t,\cdot),(t,\cdot)] + I_{d_y}\otimes\Phi_H[(t,\cdot),(t,\cdot)],$$

    $$\Delta_0 = y,\qquad \Delta_{t+1} = \Delta_t - \frac{\eta}{P}\,K(t)\,\Delta_t,\qquad
    \mathcal{L}(t) = \frac{1}{2P}\sum_{\mu,k}\Delta_t[\mu,k]^2 .$$

    For one output this is exactly the recursion of science.md §4.8. For several outputs
    §4.8 keeps one T × T gradient kernel and drops the cross-output ones; those are O(1)
    once the readouts learn (targets of rank > 1), so here Γ_ℓ keeps them. Both agree for
    rank-1 targets.

    As γ0 → 0 the kernels stay at their initial values and K(t) = L·Kx ⊗ I (the lazy
    limit). Every response is strictly causal, so each inverse in the recursion is of a
    unit lower-triangular matrix (with time-major indices). None is formed: the TP × TP
    one is applied through the push-through identity (I − UV)⁻¹U = U(I − VU)⁻¹, and all
    solves are triangular solves with the T·d_y × T·d_y matrix I − VU.

    **Cost:** O(H·d_y·T·(TP)²) time per fixed-point iteration (T = 50, P = 20, H = 4 and
    10 iterations take about a second on a 2-core CPU after compilation). Memory peaks at
    about 2H + 2 matrices of (TP)² numbers, since a Jacobi sweep holds the old and the
    new feature kernels. A warning is raised when the H feature kernels alone,
    H·(TP)²·itemsize bytes, exceed `memory_budget_bytes`. The whole solve is one jitted
    program; it recompiles only when `depth`, `steps`, `return_kernels` or the shapes
    change.

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
    - `iterations`: the number of fixed-point sweeps, ≥ 0 (0 gives the lazy curve).
      Default 10, as in the reference code; check `fixed_point_change`.
    - `return_kernels`: also return Φ_ℓ and Γ_ℓ. Default False.
    - `memory_budget_bytes`: warn above this estimate of the kernels' memory. Default 2e9.

    **Returns:** a [`DMFTResult`][pcscale.theory.DMFTResult]. A warning is raised if the
    curve is not finite (η too large: even the lazy dynamics need η·L·λ_max(Kx)/P < 2).
    """
    x, y = _inputs(x, y)
    depth = _count(depth, "depth", 2, "pass the number of weight layers L (H = L − 1 ≥ 1 hidden layers)")
    steps = _count(steps, "steps", 1, "pass the number T of GD steps to describe, e.g. steps=50")
    iterations = _count(iterations, "iterations", 0, "pass the number of fixed-point sweeps, e.g. 10")
    eta = _positive_float(learning_rate, "learning_rate", "pass the unscaled base rate η, e.g. 0.025")
    gamma0 = _positive_float(gamma0, "gamma0", "pass γ0 > 0; small values give the lazy limit")
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
    # Rates and the iteration count are traced, so changing them does not recompile.
    numbers = (jnp.asarray(eta, x.dtype), jnp.asarray(gamma0, x.dtype), jnp.asarray(iterations))
    result = _solve(x, y, *numbers, depth, steps, return_kernels)
    if not isinstance(result.loss, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(result.loss))):
        warnings.warn(
            f"the DMFT loss curve is not finite: learning_rate={eta} is too large for depth={depth} "
            "on these inputs (the lazy dynamics alone need η·L·λ_max(Kx)/P < 2); lower it.",
            stacklevel=2,
        )
    return result
