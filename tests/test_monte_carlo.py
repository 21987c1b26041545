"""Monte Carlo PC: on a linear network the Langevin chain samples the Gaussian
N(z*, τ·H⁻¹) of the hand-written energy (within tolerances set by the effective sample
size and the step's known bias); at a vanishing temperature it ends at the energy
minimum; the effective sample size matches the closed form of AR(1) chains; the MCPC
weight update is the average of the hand-written energy's weight gradient over the kept
samples."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import data

import pcscale as pc
from pcscale._monte_carlo import effective_sample_size, mcpc_sample, mcpc_step

WIDTH, HIDDEN = 4, 2  # a residual network of depth 3: two hidden layers of 4 units


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _linear_model():
    # Input 3, width 4, output 2, depth 3; an output precision λ ≠ 1 so that it is seen.
    model = pc.nn.residual_mlp(3, WIDTH, 2, 3, parameterisation=pc.MuPC(), activation="linear",
                               dtype=jnp.float64, key=jax.random.key(0))
    return pc.PCModel(model.layers, model.output_energy, output_precision=1.5)


def _hand_energy(model, z, x, y):
    """F_i of one sample from its flat activities z = (z_1, z_2), written from the layers:
    Σ_l ½‖z_l − f_l(z_{l−1})‖² + λ·½‖y − f_L(z_H)‖²."""
    z1, z2 = z[:WIDTH], z[WIDTH:]
    f1, f2, f3 = model.layers
    return (0.5 * jnp.sum((z1 - f1(x)) ** 2) + 0.5 * jnp.sum((z2 - f2(z1)) ** 2)
            + model.output_precision * 0.5 * jnp.sum((y - f3(z2)) ** 2))


def _gaussian(model, x, y):
    """Per sample: the Hessian H of the hand-written energy (the same for every sample of
    a linear network) and the minimum z*_i = −H⁻¹·∇F_i(0) (the energy is quadratic)."""
    zero = jnp.zeros(HIDDEN * WIDTH, jnp.float64)
    hessian = jax.hessian(_hand_energy, argnums=1)(model, zero, x[0], y[0])
    for i in range(1, x.shape[0]):  # a linear network's Hessian does not depend on the data
        np.testing.assert_allclose(jax.hessian(_hand_energy, argnums=1)(model, zero, x[i], y[i]), hessian,
                                   rtol=1e-13, atol=1e-13)
    grads0 = jax.vmap(jax.grad(_hand_energy, argnums=1), in_axes=(None, None, 0, 0))(model, zero, x, y)
    minima = -jnp.linalg.solve(hessian, grads0.T).T  # (B, 8)
    return np.asarray(hessian), np.asarray(minima)


def _per_sample(samples):
    """Kept activities (each leaf (S, B, 4)) as (S, B, 8): z_1 then z_2 of each sample."""
    return jnp.concatenate(samples, axis=-1)


def linear_gaussian_run(temperature, *, key, samples=2000, thin=200, relative_step=0.1):
    """The chain and every number the linear-Gaussian test compares (also for reports)."""
    model = _linear_model()
    x, y = data(jax.random.key(10), 2, 3, 2)
    hessian, minima = _gaussian(model, x, y)
    eigenvalues = np.linalg.eigvalsh(hessian)
    beta = relative_step / eigenvalues[-1]
    # The slowest mode relaxes by (1 − β·λ_min) a step: the burn-in shrinks the start's
    # distance from the stationary mean by 1e-6.
    burn_in = int(np.ceil(np.log(1e-6) / np.log1p(-beta * eigenvalues[0])))
    run = mcpc_sample(model, x, y, key=jax.random.key(key), step_size=beta, burn_in=burn_in, samples=samples,
                      thin=thin, temperature=temperature)
    chain = np.asarray(_per_sample(run.samples)).reshape(samples, -1)  # (S, B·8)

    # Unadjusted Langevin on F = ½(z − z*)ᵀH(z − z*) + c is the linear recursion
    # z' = z − βH(z − z*) + √(2βτ)ξ. Its stationary mean is z* exactly; its covariance Σ
    # solves Σ = (I − βH)Σ(I − βH) + 2βτI, i.e. Σ = τ·H⁻¹·(I − βH/2)⁻¹ (eigenvalue by
    # eigenvalue), so the bias against τ·H⁻¹ is τ·(β/2)·(I − βH/2)⁻¹, of spectral norm and
    # so every entry at most τ·(β/2)/(1 − β·λ_max/2).
    batch = x.shape[0]
    target_cov = np.kron(np.eye(batch), temperature * np.linalg.inv(hessian))
    bias_bound = temperature * (beta / 2) / (1 - beta * eigenvalues[-1] / 2)
    # Mode k of H keeps a fraction ρ_k = (1 − β·λ_k)^thin of itself between kept states
    # (an AR(1) chain), so every coordinate, and every product of two, is a mixture of
    # AR(1) chains no slower than ρ_max = (1 − β·λ_min)^thin: its effective sample size is
    # at least S·(1 − ρ_max)/(1 + ρ_max). The reported ESS is that of the energy, whose
    # modes decorrelate as ρ_k² (faster), so the tolerances use the smaller of the two.
    rho = (1 - beta * eigenvalues) ** thin
    slowest = samples * (1 - rho[0]) / (1 + rho[0])
    ess = min(float(run.ess), slowest)

    # The energy's fluctuation is (1/B)·Σ_i Σ_k ½λ_k·u_ik² (u the eigen-coordinates), its
    # mode k of variance ∝ (τ/(1 − βλ_k/2))² and lag-t autocorrelation ρ_k^{2t}: its
    # integrated autocorrelation time is the weighted mean of (1 + ρ_k²)/(1 − ρ_k²).
    weights = (1 - beta * eigenvalues / 2) ** -2.0
    energy_ess = samples / (np.sum(weights * (1 + rho ** 2) / (1 - rho ** 2)) / np.sum(weights))

    variance = np.diag(target_cov)
    mean_error = np.abs(chain.mean(axis=0) - minima.reshape(-1))
    mean_tolerance = 5 * np.sqrt(variance / ess)
    cov_error = np.abs(np.cov(chain, rowvar=False) - target_cov)
    cov_tolerance = 5 * np.sqrt((np.outer(variance, variance) + target_cov ** 2) / ess) + bias_bound
    hand = jax.vmap(jax.vmap(_hand_energy, in_axes=(None, 0, 0, 0)), in_axes=(None, 0, None, None))(
        model, _per_sample(run.samples), x, y)
    return dict(run=run, mean_error=mean_error, mean_tolerance=mean_tolerance, cov_error=cov_error,
                cov_tolerance=cov_tolerance, ess=float(run.ess), slowest=slowest, energy_ess=energy_ess,
                bias_bound=bias_bound, hand_energy=np.asarray(jnp.mean(hand, axis=1)))


@pytest.mark.parametrize("temperature, key", [(1.0, 11), (0.5, 14)])
def test_on_a_linear_network_the_chain_samples_the_gaussian_of_the_energy(temperature, key):
    out = linear_gaussian_run(temperature, key=key)
    run = out["run"]
    assert not bool(run.diverged)
    # The recorded energies are the hand-written batch-mean energies of the kept states.
    np.testing.assert_allclose(run.energy, out["hand_energy"], rtol=1e-12)
    # The reported ESS is the closed form's for the energy chain: over 1000 simulated
    # chains of these modes the estimate's median was 0.98 of it, its 0.1% quantile 0.74
    # (the clip at S and Geyer's truncation skew it downwards).
    assert float(run.ess) == pytest.approx(out["energy_ess"], rel=0.3)
    # Mean: z* exactly (no discretisation bias), within 5 standard errors per coordinate.
    assert np.all(out["mean_error"] <= out["mean_tolerance"]), np.max(out["mean_error"] / out["mean_tolerance"])
    # Covariance τ·H⁻¹ per sample and none between samples, within 5 standard errors of
    # each entry plus the step's bias bound.
    assert np.all(out["cov_error"] <= out["cov_tolerance"]), np.max(out["cov_error"] / out["cov_tolerance"])


def test_at_a_vanishing_temperature_the_chain_ends_at_the_energy_minimum():
    model = _linear_model()
    x, y = data(jax.random.key(12), 2, 3, 2)
    hessian, minima = _gaussian(model, x, y)
    eigenvalues = np.linalg.eigvalsh(hessian)
    beta = 0.5 / eigenvalues[-1]
    # Contraction (1 − β·λ_min) per step: 1e-12 of the start's distance after `steps`;
    # the stationary spread √(τ/λ_min) at τ = 1e-20 is about 2e-10.
    steps = int(np.ceil(np.log(1e-12) / np.log1p(-beta * eigenvalues[0])))
    run = mcpc_sample(model, x, y, key=jax.random.key(13), step_size=beta, burn_in=steps, samples=3, thin=5,
                      temperature=1e-20)
    last = np.asarray(_per_sample(run.samples))[-1]  # (B, 8)
    np.testing.assert_allclose(last, minima, rtol=0, atol=1e-8)
    minimum = np.mean([_hand_energy(model, jnp.asarray(m), xi, yi) for m, xi, yi in zip(minima, x, y, strict=True)])
    np.testing.assert_allclose(run.energy, minimum, rtol=1e-12)


def test_one_step_from_a_warm_start_is_a_gradient_step_plus_noise_of_the_temperature():
    model = _linear_model()
    x, y = data(jax.random.key(15), 2, 3, 2)
    start = jax.random.normal(jax.random.key(16), (2, HIDDEN * WIDTH), jnp.float64)
    z0 = (start[:, :WIDTH], start[:, WIDTH:])
    beta = 0.07
    drift = start - beta * jax.vmap(jax.grad(_hand_energy, argnums=1), in_axes=(None, 0, 0, 0))(model, start, x, y)
    cold = mcpc_sample(model, x, y, key=jax.random.key(17), step_size=beta, burn_in=0, samples=1,
                       temperature=1e-30, z0=z0)
    np.testing.assert_allclose(_per_sample(cold.samples)[0], drift, rtol=0, atol=1e-13)
    # The same key's noise √(2βτ)·ξ at τ = 4 is twice that at τ = 1.
    hot, warm = (mcpc_sample(model, x, y, key=jax.random.key(17), step_size=beta, burn_in=0, samples=1,
                             temperature=t, z0=z0) for t in (4.0, 1.0))
    noise_hot, noise_warm = (_per_sample(run.samples)[0] - drift for run in (hot, warm))
    assert float(jnp.min(jnp.abs(noise_warm))) > 1e-4
    np.testing.assert_allclose(noise_hot, 2 * noise_warm, rtol=1e-10)


def _ar1(key, rho, size):
    """A stationary AR(1) chain x_t = ρ·x_{t−1} + √(1 − ρ²)·ε_t of unit variance."""
    noise = jax.random.normal(key, (size,), jnp.float64)

    def step(previous, eps):
        current = rho * previous + np.sqrt(1 - rho ** 2) * eps
        return current, current

    _, rest = jax.lax.scan(step, noise[0], noise[1:])
    return jnp.concatenate([noise[:1], rest])


@pytest.mark.parametrize("rho, tolerance", [(0.5, 0.2), (0.9, 0.3)])
def test_the_effective_sample_size_of_an_ar1_chain_is_its_closed_form(rho, tolerance):
    # ESS = S/τ with τ = 1 + 2·Σ_k ρ^k = (1 + ρ)/(1 − ρ). Over 200 chains of 20000 the
    # estimate's relative standard deviation was 4% (ρ = 0.5) and 8% (ρ = 0.9): the
    # tolerances are about 4-5 of them.
    size = 20_000
    expected = size * (1 - rho) / (1 + rho)
    ess = float(effective_sample_size(_ar1(jax.random.key(20), rho, size)))
    assert ess == pytest.approx(expected, rel=tolerance)


def test_the_effective_sample_size_of_independent_draws_is_their_number():
    size = 20_000
    ess = float(effective_sample_size(jax.random.normal(jax.random.key(21), (size,), jnp.float64)))
    # Over 200 such chains: mean 0.985·S, standard deviation 0.017·S, minimum 0.90·S.
    assert 0.88 * size <= ess <= size
    # A constant chain is worth one sample; an alternating one is clipped to S.
    assert float(effective_sample_size(jnp.full(50, 3.0))) == 1.0
    assert float(effective_sample_size(jnp.tile(jnp.array([1.0, -1.0]), 25))) == 50.0
    assert float(effective_sample_size(jnp.array([2.0]))) == 1.0


def _tanh_model():
    return pc.nn.residual_mlp(6, 16, 3, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                              key=jax.random.key(30))


def test_mcpc_step_applies_the_average_weight_gradient_over_the_kept_samples():
    model = _tanh_model()
    x, y = data(jax.random.key(31), 5, 6, 3)
    lr = 0.05
    optimiser = optax.sgd(lr)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    settings = dict(key=jax.random.key(32), step_size=0.1, burn_in=4, samples=5, thin=3, temperature=0.3)
    new_model, _, metrics, last = mcpc_step(model, state, x, y, optimiser=optimiser, **settings)
    run = mcpc_sample(model, x, y, **settings)  # the same chain: the same key and settings
    for a, b in zip(last, run.samples, strict=True):
        np.testing.assert_array_equal(a, b[-1])

    def energy(m, z):
        """The batch-mean energy, written from the layers."""
        inputs = (x,) + tuple(z)
        hidden = sum(0.5 * jnp.sum((z_l - jax.vmap(layer)(prev)) ** 2)
                     for layer, prev, z_l in zip(m.layers[:-1], inputs[:-1], z, strict=True))
        out = jax.vmap(m.layers[-1])(inputs[-1])
        return (hidden + m.output_precision * 0.5 * jnp.sum((y - out) ** 2)) / x.shape[0]

    kept = [tuple(leaf[s] for leaf in run.samples) for s in range(5)]
    grads = [_flat(eqx.filter(eqx.filter_grad(energy)(model, z), eqx.is_array)) for z in kept]
    average = sum(grads) / len(grads)
    expected = _flat(eqx.filter(model, eqx.is_array)) - lr * average
    np.testing.assert_allclose(_flat(eqx.filter(new_model, eqx.is_array)), expected, rtol=1e-10, atol=1e-12)
    assert bool(metrics.updated) and not bool(metrics.diverged)
    assert float(metrics.grad_norm) == pytest.approx(float(jnp.linalg.norm(average)), rel=1e-10)
    assert float(metrics.energy) == pytest.approx(np.mean([float(energy(model, z)) for z in kept]), rel=1e-12)
    assert float(metrics.loss) == pytest.approx(float(0.5 * jnp.mean(jnp.sum((y - model(x)) ** 2, axis=-1))),
                                                rel=1e-12)


def test_explicit_keys_decide_the_chain():
    model = _tanh_model()
    x, y = data(jax.random.key(40), 3, 6, 3)
    settings = dict(step_size=0.1, burn_in=2, samples=4, thin=2)
    first = mcpc_sample(model, x, y, key=jax.random.key(41), **settings)
    again = mcpc_sample(model, x, y, key=jax.random.key(41), **settings)
    legacy = mcpc_sample(model, x, y, key=jax.random.PRNGKey(41), **settings)
    other = mcpc_sample(model, x, y, key=jax.random.key(42), **settings)
    np.testing.assert_array_equal(_flat(first.samples), _flat(again.samples))
    np.testing.assert_array_equal(_flat(first.samples), _flat(legacy.samples))
    assert np.min(np.abs(np.asarray(_flat(first.samples) - _flat(other.samples)))) > 0
    # The noise differs between the samples of a batch and between the kept states.
    assert np.min(np.abs(np.diff(np.asarray(first.samples[0]), axis=0))) > 0


def test_a_diverging_chain_is_reported_keeps_its_last_finite_state_and_refuses_the_update():
    model = _tanh_model()
    x, y = data(jax.random.key(50), 3, 6, 3)
    optimiser = optax.sgd(0.1)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    new_model, _, metrics, last = mcpc_step(model, state, x, y, optimiser=optimiser, key=jax.random.key(51),
                                            step_size=50.0, burn_in=0, samples=100, thin=2)
    assert bool(metrics.diverged) and not bool(metrics.updated)
    np.testing.assert_array_equal(_flat(eqx.filter(new_model, eqx.is_array)), _flat(eqx.filter(model, eqx.is_array)))
    assert np.all(np.isfinite(np.asarray(_flat(last))))
    run = mcpc_sample(model, x, y, key=jax.random.key(51), step_size=50.0, burn_in=0, samples=100, thin=2)
    assert bool(run.diverged) and np.all(np.isfinite(np.asarray(run.energy)))
    # Once stopped the chain repeats its last finite state.
    np.testing.assert_array_equal(run.samples[0][-1], run.samples[0][-2])


def test_mcpc_refuses_bad_settings(unchecked):
    model = _tanh_model()
    x, y = data(jax.random.key(60), 2, 6, 3)
    good = dict(key=jax.random.key(0), step_size=0.1, burn_in=1, samples=2)
    for name, value, error in [
        ("step_size", 0.0, ValueError), ("step_size", -0.1, ValueError), ("step_size", float("nan"), ValueError),
        ("step_size", True, ValueError), ("samples", 0, ValueError), ("samples", 2.0, ValueError),
        ("burn_in", -1, ValueError), ("thin", 0, ValueError), ("temperature", 0.0, ValueError),
        ("temperature", -1.0, ValueError), ("temperature", float("inf"), ValueError), ("key", 0, TypeError),
        ("key", jax.random.split(jax.random.key(0), 2), TypeError), ("key", jnp.zeros(3), TypeError),
    ]:
        with pytest.raises(error, match=f"`{name}`"):
            mcpc_sample(model, x, y, **(good | {name: value}))
    optimiser = optax.sgd(0.1)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    with pytest.raises(TypeError, match="optimiser"):
        mcpc_step(model, state, x, y, optimiser="sgd", **good)
    with pytest.raises(ValueError, match="`temperature`"):
        mcpc_step(model, state, x, y, optimiser=optimiser, temperature=0.0, **good)
    with pytest.raises(ValueError, match="`chain`"):
        effective_sample_size(jnp.zeros((3, 2)))
