"""Monte Carlo predictive coding (MCPC): inference as unadjusted Langevin dynamics on the
activities, and the weight update averaged over the sampled states; the effective sample
size of the kept chain, measured from its energies."""

from __future__ import annotations

import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, PyTree, Shaped

from ._custom_types import Activities, BatchX, BatchY
from ._gradients import energy_gradients
from ._infer import summed_energy_and_grad
from ._model import PCModel
from ._precise import precise_jit
from ._single_step import _check_optimiser, _warm_start
from ._step import guarded_update
from ._validation import as_float_array, check_opt_state, is_finite_real, validated
from .nn._checks import check_key


class MonteCarloSamples(eqx.Module):
    """The kept states of an [`mcpc_sample`][pcscale.mcpc_sample] chain (S samples).

    - `samples`: the kept activities, a tuple like the activities with a leading sample
      axis (each leaf (S, B, …)); sample s is the state after burn-in + s·thin steps, so
      the last one is the chain's final state (a warm start for the next chain).
    - `energy`: the batch-mean energy F(z_s) = (1/B)·Σ_i F_i(z_s) of each kept state.
    - `ess`: the effective sample size of `energy` (see
      [`effective_sample_size`][pcscale.effective_sample_size]), in [1, S]: how many
      independent draws the kept chain is worth for estimating energy averages. The
      energy decorrelates faster than the activities' slowest directions (on a linear
      network mode k of the activity Hessian H contributes ρ_k² to the energy's
      autocorrelation where that mode's coordinates have ρ_k), so averages of the
      activities themselves may be worth fewer draws.
    - `diverged`: whether a Langevin step reached a non-finite energy or activity
      gradient; from that step on the chain stays at its last finite state (the samples
      that follow repeat it), so a too-large `step_size` is reported, not propagated.
    """

    samples: Activities
    energy: Float[Array, " S"]
    ess: Float[Array, ""]
    diverged: Bool[Array, ""]


class MonteCarloStepMetrics(eqx.Module):
    """Metrics of one [`mcpc_step`][pcscale.mcpc_step], all at the weights θ before the
    update.

    - `energy`: the batch-mean energy averaged over the kept samples, (1/S)·Σ_s F(z_s; θ).
    - `loss`: the feedforward (BP) loss 𝓛(θ).
    - `grad_norm`: ‖(1/S)·Σ_s ∇_θ F(z_s; θ)‖, the norm of the applied weight gradient.
    - `updated`: whether the update was applied (refused after a diverged chain, or for a
      non-finite gradient, weights or optimiser state).
    - `ess`: the kept chain's effective sample size (as `MonteCarloSamples.ess`).
    - `diverged`: whether the chain reached a non-finite energy or activity gradient.
    """

    energy: Float[Array, ""]
    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    updated: Bool[Array, ""]
    ess: Float[Array, ""]
    diverged: Bool[Array, ""]


def _ess(chain: Array) -> Array:
    """`effective_sample_size` of a validated one-dimensional float chain (callable inside
    jit)."""
    size = chain.shape[0]
    if size == 1:
        return jnp.ones((), chain.dtype)
    centred = chain - jnp.mean(chain)
    # Biased autocovariance c_k = (1/S)·Σ_t x_t·x_{t+k}, by FFT with zero padding to 2S
    # (no circular wrap-around).
    spectrum = jnp.fft.rfft(centred, n=2 * size)
    autocovariance = jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=2 * size)[:size] / size
    variance = autocovariance[0]
    rho = autocovariance / jnp.where(variance > 0, variance, 1.0)
    # Geyer's initial monotone sequence: the sums of adjacent pairs Γ_m = ρ_{2m} + ρ_{2m+1}
    # of a reversible chain are positive and decreasing, so the estimated ones are summed
    # up to the first that is not positive, each capped by those before it.
    pairs = size // 2
    gamma = rho[0:2 * pairs:2] + rho[1:2 * pairs:2]
    positive = jnp.cumprod((gamma > 0).astype(chain.dtype))
    monotone = jax.lax.cummin(gamma, axis=0)
    tau = -1.0 + 2.0 * jnp.sum(positive * monotone)
    ess = jnp.where(tau > 0, size / jnp.where(tau > 0, tau, 1.0), float(size))
    # A constant chain (zero variance) is worth one sample.
    ess = jnp.where(variance > 0, ess, 1.0)
    return jnp.clip(ess, 1.0, float(size))


_ess_jit = precise_jit(_ess)


def effective_sample_size(chain: Shaped[ArrayLike, " S"]) -> Float[Array, ""]:
    """The effective sample size S/τ of a scalar chain x_1 … x_S, with the integrated
    autocorrelation time τ = 1 + 2·Σ_{k≥1} ρ_k estimated by Geyer's initial monotone
    sequence: ρ_k from the biased autocovariance, summed in adjacent pairs
    Γ_m = ρ_{2m} + ρ_{2m+1} up to the first Γ_m ≤ 0, each capped by the pairs before it.
    For independent draws it is about S; for an AR(1) chain of coefficient ρ about
    S·(1 − ρ)/(1 + ρ).

    **Arguments:** `chain`, a one-dimensional array of S ≥ 1 numbers.

    **Returns:** the effective sample size, clipped to [1, S]; 1 for a constant chain,
    NaN if the chain holds a NaN or inf.
    """
    array = as_float_array(chain, "chain")
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(
            f"`chain` must be a one-dimensional array of at least one number, got shape {array.shape}; "
            "pass e.g. the per-sample energies of a chain, MonteCarloSamples.energy."
        )
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    return _ess_jit(array)


def _chain(model, x, y, z0, key, step_size: float, temperature: float, burn_in: int, samples: int, thin: int):
    """The Langevin chain on validated inputs (callable inside jit). Returns
    `MonteCarloSamples`."""
    z = jax.vmap(model.activities_one)(x) if z0 is None else tuple(z0)
    fn = summed_energy_and_grad(model, x, y)
    batch = x.shape[0]
    noise = math.sqrt(2.0 * step_size * temperature)

    def step(carry, step_key):
        z, energy, grad, stopped = carry
        keys = jax.random.split(step_key, len(z))
        proposal = tuple(
            z_l - step_size * g_l + noise * jax.random.normal(k_l, z_l.shape, z_l.dtype)
            for z_l, g_l, k_l in zip(z, grad, keys, strict=True)
        )
        new_energy, new_grad = fn(proposal)
        finite = jnp.isfinite(new_energy) & jnp.isfinite(otu.tree_norm(new_grad))
        move = finite & ~stopped
        z, energy, grad = otu.tree_where(move, (proposal, new_energy, new_grad), (z, energy, grad))
        return (z, energy, grad, stopped | ~finite), None

    def block(carry, block_keys):
        carry, _ = jax.lax.scan(step, carry, block_keys)
        z, energy, _, _ = carry
        return carry, (z, energy / batch)

    energy0, grad0 = fn(z)
    stopped0 = ~(jnp.isfinite(energy0) & jnp.isfinite(otu.tree_norm(grad0)))
    keys = jax.random.split(key, burn_in + samples * thin)
    carry, _ = jax.lax.scan(step, (z, energy0, grad0, stopped0), keys[:burn_in])
    carry, (kept, energies) = jax.lax.scan(block, carry, keys[burn_in:].reshape(samples, thin))
    diverged = carry[3]
    return MonteCarloSamples(kept, energies, _ess(energies), diverged)


@precise_jit
def _mcpc_sample(model, x, y, z0, key, step_size: float, temperature: float, burn_in: int, samples: int,
                 thin: int):
    x, y = validated(model, x, y, z0)
    z0 = _warm_start(model, z0, "z0")
    return _chain(model, x, y, z0, key, step_size, temperature, burn_in, samples, thin)


@precise_jit
def _mcpc_step(model, opt_state, x, y, z0, optimiser, key, step_size: float, temperature: float, burn_in: int,
               samples: int, thin: int):
    check_opt_state(model, optimiser, opt_state)  # at trace time only
    x, y = validated(model, x, y, z0)
    z0 = _warm_start(model, z0, "z0")
    loss = jnp.mean(jax.vmap(lambda xi, yi: model.output_energy(model.forward_one(xi), yi))(x, y))
    chain = _chain(model, x, y, z0, key, step_size, temperature, burn_in, samples, thin)

    def accumulate(total, z):
        _, grads = energy_gradients(model, z, x, y)
        return jax.tree.map(jnp.add, total, eqx.filter(grads, eqx.is_array)), None

    zero = jax.tree.map(jnp.zeros_like, eqx.filter(model, eqx.is_array))
    total, _ = jax.lax.scan(accumulate, zero, chain.samples)
    grads = jax.tree.map(lambda g: g / samples, total)
    model, opt_state, grad_norm, accept = guarded_update(model, opt_state, grads, optimiser, ~chain.diverged)
    metrics = MonteCarloStepMetrics(jnp.mean(chain.energy), loss, grad_norm, accept, chain.ess, chain.diverged)
    last = tuple(leaf[-1] for leaf in chain.samples)
    return model, opt_state, metrics, last


def _check_settings(key, step_size, burn_in, samples, thin, temperature, z0):
    """Validate the sampler's settings (eagerly, with errors naming the argument); returns
    the key as a typed key array, the numbers as Python numbers and `z0` as a tuple of
    arrays (or None)."""
    check_key(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # a legacy uint32[2] key
        key = jax.random.wrap_key_data(key)
    if isinstance(step_size, bool) or not (is_finite_real(step_size) and step_size > 0):
        raise ValueError(f"`step_size` must be a positive finite float, got {step_size!r}; e.g. step_size=0.05.")
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral) or burn_in < 0:
        raise ValueError(f"`burn_in` must be a non-negative int, got {burn_in!r}; e.g. burn_in=100.")
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"`samples` must be a positive int, got {samples!r}; e.g. samples=20.")
    if isinstance(thin, bool) or not isinstance(thin, numbers.Integral) or thin < 1:
        raise ValueError(f"`thin` must be a positive int, got {thin!r}; e.g. thin=1 (keep every state).")
    if isinstance(temperature, bool) or not (is_finite_real(temperature) and temperature > 0):
        raise ValueError(
            f"`temperature` must be a positive finite float, got {temperature!r}; the default 1.0 "
            "samples the energy's Gibbs distribution exp(−Σ_i F_i)."
        )
    if z0 is not None:
        z0 = tuple(as_float_array(z_l, f"z0[{i}]") for i, z_l in enumerate(z0))
    return key, float(step_size), int(burn_in), int(samples), int(thin), float(temperature), z0


def mcpc_sample(
    model: PCModel,
    x: BatchX,
    y: BatchY,
    *,
    key: PRNGKeyArray,
    step_size: float,
    burn_in: int,
    samples: int,
    thin: int = 1,
    temperature: float = 1.0,
    z0: Activities | None = None,
) -> MonteCarloSamples:
    """Sample the activities by unadjusted Langevin dynamics on the energy, in one jitted
    scan: from the feedforward state (or `z0`), burn_in + S·thin steps

    z ← z − β·∇_z Σ_i F_i(z) + √(2βτ)·ξ,   ξ ~ N(0, I),

    keeping every thin-th state after the burn-in. For small β the chain's stationary
    distribution is the Gibbs distribution p(z | x, y) ∝ exp(−Σ_i F_i(z)/τ), independent
    over the batch; for a linear network each sample's activities are then Gaussian,
    N(z*_i, τ·H_i⁻¹) with z*_i the energy minimum and H_i the activity Hessian of F_i, up to
    the discretisation's O(β) bias (the covariance is τ·H_i⁻¹·(I − βH_i/2)⁻¹ exactly). There
    is no equilibrium to certify; `ess` says how many independent draws the kept chain is
    worth.

    **Arguments:**

    - `model`, `x`, `y`: as for [`infer`][pcscale.infer].
    - `key`: a JAX PRNG key (`jax.random.key(seed)`); one subkey is split off per step.
    - `step_size`: β > 0, per sample (as [`GradientDescent`][pcscale.GradientDescent]).
    - `burn_in`: steps discarded before the first kept one, ≥ 0.
    - `samples`: S ≥ 1, the number of kept states.
    - `thin`: ≥ 1, the steps between kept states.
    - `temperature`: τ > 0, the scale of the noise (the stationary covariance is ∝ τ).
    - `z0`: the starting activities (e.g. the last sample of a previous chain); default
      the feedforward state.

    **Returns:** [`MonteCarloSamples`][pcscale.MonteCarloSamples].
    """
    key, step_size, burn_in, samples, thin, temperature, z0 = _check_settings(
        key, step_size, burn_in, samples, thin, temperature, z0)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    return _mcpc_sample(model, x, y, z0, key, step_size, temperature, burn_in, samples, thin)


def mcpc_step(
    model: PCModel,
    opt_state: PyTree,
    x: BatchX,
    y: BatchY,
    *,
    optimiser: optax.GradientTransformation,
    key: PRNGKeyArray,
    step_size: float,
    burn_in: int,
    samples: int,
    thin: int = 1,
    temperature: float = 1.0,
    z0: Activities | None = None,
) -> tuple[PCModel, PyTree, MonteCarloStepMetrics, Activities]:
    """One jitted MCPC training step: a Langevin chain on the activities (as
    [`mcpc_sample`][pcscale.mcpc_sample]), then the optimiser update with the PC weight
    gradient averaged over the S kept states,

    g = (1/S)·Σ_s ∇_θ F(z_s; θ),

    F the batch-mean energy (as [`pc_gradients`][pcscale.pc_gradients]): a Monte Carlo
    estimate of E_{z ~ p(z | x, y)}[∇_θ F(z; θ)], the gradient with the distribution of
    the activities held fixed (at τ = 1, that of −log p(x, y) up to a constant, for
    data-independent normalisers). The update is refused (weights and
    optimiser state returned unchanged, `metrics.updated` False) if the chain diverged or
    the update is not finite.

    **Arguments:**

    - `model`, `opt_state`, `x`, `y`, `optimiser`: as for [`pc_step`][pcscale.pc_step].
    - `key`, `step_size`, `burn_in`, `samples`, `thin`, `temperature`, `z0`: as for
      [`mcpc_sample`][pcscale.mcpc_sample].

    **Returns:** `(model, opt_state, MonteCarloStepMetrics, activities)`, the activities
    the chain's final state, to carry into the next call as `z0`.
    """
    _check_optimiser(optimiser)
    key, step_size, burn_in, samples, thin, temperature, z0 = _check_settings(
        key, step_size, burn_in, samples, thin, temperature, z0)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    return _mcpc_step(model, opt_state, x, y, z0, optimiser, key, step_size, temperature, burn_in, samples, thin)
