"""Hand-written reference implementations, independent of the library's code paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import pcscale as pc


def weights_of(model: pc.PCModel) -> list:
    """Raw weight matrices W_1 … W_L of an MLP built by pcscale.nn."""
    return [layer.module.weight for layer in model.layers]


def mup_multipliers(input_dim, width, depth, *, alpha=0.5, gamma0=1.0, skips=True):
    """μP-family multipliers from docs/background.md §3.1, written out by hand."""
    residual = skips and depth > 2
    out = [1 / np.sqrt(input_dim)]
    for _ in range(depth - 2):
        out.append(depth ** (-alpha) / np.sqrt(width) if residual else 1 / np.sqrt(width))
    out.append(1 / (gamma0 * width))
    return out


def hand_forward(weights, multipliers, x, *, phi=jnp.tanh, skips=False):
    """Batched MLP forward: returns the hidden pre-activations and the output."""
    hidden = []
    h = multipliers[0] * x @ weights[0].T
    for W, a in zip(weights[1:-1], multipliers[1:-1]):
        hidden.append(h)
        branch = a * phi(h) @ W.T
        h = h + branch if skips else branch
    hidden.append(h)
    out = multipliers[-1] * phi(h) @ weights[-1].T
    return hidden[: len(weights) - 1], out


def mse(prediction, target):
    return 0.5 * jnp.sum((target - prediction) ** 2, axis=-1)


def cross_entropy(prediction, target):
    shifted = prediction - jnp.max(prediction, axis=-1, keepdims=True)
    log_probs = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    return -jnp.sum(target * log_probs, axis=-1)


def hand_energy(z, weights, multipliers, x, y, *, phi=jnp.tanh, skips=False, loss=mse, precision=1.0):
    """Batch-mean PC energy of an MLP, written from docs/background.md §2.2."""
    inputs = [x] + list(z)
    total = 0.0
    for l, z_l in enumerate(z):
        a, W = multipliers[l], weights[l]
        prev = inputs[l]
        mu = a * prev @ W.T if l == 0 else a * phi(prev) @ W.T + (prev if skips else 0.0)
        total = total + 0.5 * jnp.sum((z_l - mu) ** 2, axis=-1)
    out = multipliers[-1] * phi(inputs[-1]) @ weights[-1].T
    total = total + precision * loss(out, y)
    return jnp.mean(total)


def tree_allclose(a, b, **kwargs) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.allclose(np.asarray(u), np.asarray(v), **kwargs) for u, v in zip(leaves_a, leaves_b)
    )


def all_parameterisations():
    return [pc.SP(), pc.NTP(), pc.MuP(), pc.MuPC(), pc.CompleteP(), pc.DepthMuP(alpha=0.75)]


def all_solvers(max_steps=20_000, rtol=1e-10):
    import optax

    return [
        pc.GradientDescent(step_size=0.2, rtol=rtol, max_steps=max_steps),
        pc.OptaxSolver(optax.sgd(0.1, momentum=0.8), rtol=rtol, max_steps=max_steps),
        pc.OptaxSolver(optax.adam(0.02), rtol=rtol, max_steps=max_steps),
        pc.ConjugateGradient(rtol=rtol, max_steps=max_steps),
        pc.ConjugateGradient(rtol=rtol, max_steps=max_steps, preconditioner=pc.DepthPreconditioner()),
        pc.NewtonKrylov(rtol=rtol),
        pc.Nesterov(step_size=0.1, rtol=rtol, max_steps=max_steps),
        pc.ODEFlow(rtol=rtol, max_steps=max_steps),
    ]


SOLVER_IDS = ["gd", "momentum", "adam", "cg", "pcg", "newton", "nesterov", "ode"]


def data(key, batch, input_dim, output_dim, *, one_hot=False, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch, input_dim), dtype)
    if one_hot:
        labels = jax.random.randint(ky, (batch,), 0, output_dim)
        return x, jax.nn.one_hot(labels, output_dim, dtype=dtype)
    return x, jax.random.normal(ky, (batch, output_dim), dtype)
