"""The equations of the infinite-width DMFT of deep linear networks (docs/background.md
§4.8) and the two ways [`dmft`][pcscale.theory.dmft] solves them: forward substitution in
time (`solve_causally`) and Jacobi sweeps of the fixed-point map (`jacobi_sweep`).

Notation (maths-heavy, so the paper's letters): T steps, P samples, d outputs, H hidden
layers. Feature-side objects are indexed by pairs (t, μ) at t·P + μ, gradient-side ones
by pairs (t, k) at t·d + k. Time-major order makes every causal operator below (strictly)
lower triangular.

Departure from docs/background.md §4.8 for d > 1: there Γ_ℓ is one T × T kernel shared by
all outputs (cross-output kernels taken as zero). The readouts of different outputs learn
along shared features, so g^k·g^k'/N (k ≠ k') is O(1) at infinite width whenever the
target matrix has rank > 1; leaving it out was off by ~27% from finite-width networks
(N = 512 … 8192, no trend in N). Here Γ_ℓ is the full (T·d) × (T·d) kernel over (t, k),
which gives §4.8 exactly when d = 1 (and for rank-1 targets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular


def _combine(feature, gradient):
    """K = Γ_1(t,t) ⊗ Kx + Σ_{ℓ<H} Γ_{ℓ+1}(t,t) ⊗ Φ_ℓ(t,t) + I_d ⊗ Φ_H(t,t) from the
    equal-time blocks stacked over layers: feature (H+1, T, P, P) holds Kx, Φ_1 … Φ_H and
    gradient (H+1, T, d, d) holds Γ_1 … Γ_H, I_d. Returns (T, P·d, P·d), (μ, k) at μ·d + k."""
    _, T, P, _ = feature.shape
    d = gradient.shape[-1]
    kernel = jnp.einsum("ltmn,ltkj->tmknj", feature, gradient)
    return kernel.reshape(T, P * d, P * d)


def equal_time_ntk(phis, gammas, kx):
    """K(t) for all t, shape (T, P·d, P·d)."""
    P = kx.shape[0]
    T = phis[0].shape[0] // P
    d = gammas[0].shape[0] // T
    steps = jnp.arange(T)
    feature = [jnp.broadcast_to(kx, (T, P, P))]
    feature += [phi.reshape(T, P, T, P)[steps, :, steps, :] for phi in phis]
    gradient = [gamma.reshape(T, d, T, d)[steps, :, steps, :] for gamma in gammas]
    gradient.append(jnp.broadcast_to(jnp.eye(d, dtype=kx.dtype), (T, d, d)))
    return _combine(jnp.stack(feature), jnp.stack(gradient))


def first_order_errors(ntk, y, rate):
    """Δ_0 = y and Δ_{t+1} = Δ_t − (η/P)·K(t)·Δ_t; returns Δ_0 … Δ_{T−1}, (T, P, d)."""

    def step(delta, kernel):
        return delta - rate * kernel @ delta, delta

    _, deltas = jax.lax.scan(step, y.reshape(-1), ntk)
    return deltas.reshape(-1, *y.shape)


def mean_squared_loss(deltas):
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


def jacobi_sweep(phis, gammas, rs, qs, deltas, boundaries, coupling):
    """One Jacobi sweep of every layer; Φ_0 and R_0 = 0 sit below layer 1, Γ_{H+1} and
    Q_{H+1} = 0 above layer H. Returns the new (Φ, Γ, Rᵀ, Q), each a list over layers."""
    phi_input, gamma_output, no_response, causal = boundaries
    below_phi = [phi_input] + phis[:-1]
    below_r = [no_response] + rs[:-1]
    above_gamma = gammas[1:] + [gamma_output]
    above_q = qs[1:] + [no_response]
    # A Python loop, not vmap: batched triangular solves (LAPACK under a parallel batch
    # map) deadlocked inside a lax loop on a 2-core CPU with jax 0.10.
    updated = [
        _layer(below_phi[ell], below_r[ell], above_gamma[ell], above_q[ell], deltas, coupling, causal)
        for ell in range(len(phis))
    ]
    return tuple(list(parts) for parts in zip(*updated, strict=True))


def relative_change(old, new):
    """The largest entry change of any Φ_ℓ or Γ_ℓ over that kernel's largest entry."""
    changes = [jnp.max(jnp.abs(b - a)) / jnp.max(jnp.abs(a)) for a, b in zip(old, new, strict=True)]
    return jnp.max(jnp.stack(changes))


def _block(matrix, t, size):
    """Time block t of a time-major matrix: rows t·size … (t + 1)·size − 1."""
    return jax.lax.dynamic_slice_in_dim(matrix, t * size, size, axis=0)


def _set_block(matrix, t, rows):
    return jax.lax.dynamic_update_slice_in_dim(matrix, rows, t * rows.shape[0], axis=0)


def _set_symmetric(matrix, t, rows):
    """Write time block t of a symmetric matrix: the rows, and their transpose as columns."""
    matrix = _set_block(matrix, t, rows)
    return jax.lax.dynamic_update_slice_in_dim(matrix, rows.T, t * rows.shape[0], axis=1)


def solve_causally(y, gamma0, coupling, rate, boundaries, hidden: int, exact_steps: bool):
    """The fixed point itself, by forward substitution in time.

    Every response is strictly causal, so the quantities at time t follow from those at
    earlier times and from the other layers at time t: features go up the network
    (h_ℓ(t) needs h_{ℓ−1}(t)) and gradients down it (g_ℓ(t) needs g_{ℓ+1}(t)). Step t
    fills time block t of every object: an upward pass (U, R = UΨ, Φ) over ℓ = 1 … H, a
    downward pass (V, Ψ = I + VR, Q = ΨV, Γ) over ℓ = H … 1, then K(t) and Δ_{t+1} (with
    `exact_steps`, Δ_t after the upward pass instead). Blocks of later times stay zero,
    which the causal masks make harmless.

    The products Φ_ℓ = Φ_{ℓ−1} + RB + BᵀRᵀ + RMRᵀ and Γ_ℓ = ΨMΨᵀ share B = VΦ_{ℓ−1} and
    M = BVᵀ + Γ_{ℓ+1} (the `_layer` identities). Both are kept and extended as blocks
    appear: B[a, s] for a < s when column s of Φ_{ℓ−1} is known (step s), for a ≥ s when
    row a of V is (step a). A step then costs O(d·(TP)² + P·T·d·TP) per layer, so the
    solve costs about one Jacobi sweep.

    With `exact_steps`, Δ_t is read from the fields instead of the first-order recursion.
    The readout after t steps is w(t) = w(0) + (γ0η/P)·Σ_{s<t} h_H(s)·Δ_s, so
    f_t = (1/γ0)·⟨w(0)·h_H(t)⟩ + (η/P)·Σ_{s<t} Φ_H(t, s)·Δ_s, and h_H's response to its
    source w(0) gives ⟨w_k(0)·h_H(t, μ)⟩ = Σ_s R_H[(t, μ), (s, k)]. Both terms are known
    once the upward pass has reached layer H at time t. Together they are (1/γ0)·Σ_s
    U_{H+1}[(t, μ), (s, k)], the drive a layer above the readout would receive.

    Returns Φ, Γ, Rᵀ, Q (lists over layers, as `jacobi_sweep` takes them) and Δ_0 … Δ_{T−1}.
    """
    phi_input, gamma_output, _, _ = boundaries
    P, d = y.shape
    T = phi_input.shape[0] // P
    H = hidden
    dtype = y.dtype
    time = jnp.arange(T)

    def zeros(rows, columns):
        return [jnp.zeros((rows, columns), dtype)] * H

    state = {
        "phi": zeros(T * P, T * P), "gamma": zeros(T * d, T * d),
        "r": zeros(T * P, T * d),  # R_ℓ = U_ℓ Ψ_ℓ, rows (t, μ)
        "v": zeros(T * d, T * P), "psi": zeros(T * d, T * d),
        "b": zeros(T * d, T * P), "m": zeros(T * d, T * d),
        "deltas": jnp.zeros((T + 1, P, d), dtype).at[0].set(y),
    }

    def step(t, state):
        phis, gammas, rs, vs, psis, bs, ms = (
            list(state[name]) for name in ("phi", "gamma", "r", "v", "psi", "b", "m")
        )
        past = state["deltas"][:T] * (time < t)[:, None, None]  # Δ_s for s < t only
        feature_known = jnp.repeat(time <= t, P)
        gradient_known = jnp.repeat(time <= t, d)

        r_below = jnp.zeros((P, T * d), dtype)  # R_0 = 0
        for ell in range(H):
            phi_row = _block(phi_input if ell == 0 else phis[ell - 1], t, P)  # Φ_{ℓ−1}[(t, ·), ·]
            drive = jnp.einsum("msn,snk->msk", phi_row.reshape(P, T, P), past).reshape(P, T * d)
            r_row = (r_below + coupling * drive) @ psis[ell]  # U_ℓ[t] Ψ_ℓ; U_ℓ[t] needs Ψ_ℓ's rows < t
            rs[ell] = _set_block(rs[ell], t, r_row)
            b_column = vs[ell] @ phi_row.T  # B[a, t] for a < t: V's later rows are still zero
            bs[ell] = jax.lax.dynamic_update_slice_in_dim(bs[ell], b_column, t * P, axis=1)
            row = phi_row + r_row @ bs[ell] + b_column.T @ rs[ell].T + (r_row @ ms[ell]) @ rs[ell].T
            phis[ell] = _set_symmetric(phis[ell], t, jnp.where(feature_known, row, 0))
            r_below = r_row
        deltas = state["deltas"]
        if exact_steps:
            drive = jnp.einsum("msn,snk->msk", _block(phis[-1], t, P).reshape(P, T, P), past)
            readout = (r_below.reshape(P, T, d) + coupling * drive).sum(axis=1) / gamma0
            deltas = deltas.at[t].set(y - readout)

        q_above = jnp.zeros((d, T * P), dtype)  # Q_{H+1} = 0
        unit = jnp.kron(jax.nn.one_hot(t, T, dtype=dtype)[None], jnp.eye(d, dtype=dtype))
        for ell in reversed(range(H)):
            gamma_row = _block(gamma_output if ell == H - 1 else gammas[ell + 1], t, d)  # Γ_{ℓ+1}[(t, ·), ·]
            drive = jnp.einsum("ksj,snj->ksn", gamma_row.reshape(d, T, d), past).reshape(d, T * P)
            v_row = q_above + coupling * drive
            vs[ell] = _set_block(vs[ell], t, v_row)
            b_row = v_row @ (phi_input if ell == 0 else phis[ell - 1])  # B[t, s] for s ≤ t
            bs[ell] = _set_block(bs[ell], t, b_row)
            m_row = b_row @ vs[ell].T + jnp.where(gradient_known, gamma_row, 0)
            ms[ell] = _set_symmetric(ms[ell], t, m_row)
            psi_row = unit + v_row @ rs[ell]
            psis[ell] = _set_block(psis[ell], t, psi_row)
            q_above = psi_row @ vs[ell]
            gammas[ell] = _set_symmetric(gammas[ell], t, jnp.where(gradient_known, psi_row @ ms[ell] @ psis[ell].T, 0))

        if not exact_steps:  # K(t) from the equal-time blocks, then one first-order step

            def diagonal(matrix, size):
                return jax.lax.dynamic_slice(matrix, (t * size, t * size), (size, size))

            feature = jnp.stack([phi_input[:P, :P]] + [diagonal(phi, P) for phi in phis])
            gradient = jnp.stack([diagonal(gamma, d) for gamma in gammas] + [jnp.eye(d, dtype=dtype)])
            ntk = _combine(feature[:, None], gradient[:, None])[0]
            delta = deltas[t].reshape(-1)
            deltas = deltas.at[t + 1].set((delta - rate * ntk @ delta).reshape(P, d))
        return {"phi": phis, "gamma": gammas, "r": rs, "v": vs, "psi": psis, "b": bs, "m": ms, "deltas": deltas}

    state = jax.lax.fori_loop(0, T, step, state)
    # The sweep's format: Rᵀ, and Q = ΨV.
    rs = [r.T for r in state["r"]]
    qs = [psi @ v for psi, v in zip(state["psi"], state["v"], strict=True)]
    return state["phi"], state["gamma"], rs, qs, state["deltas"][:T]
