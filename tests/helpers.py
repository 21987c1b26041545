"""Hand-written reference implementations, independent of the library's code paths."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


# The quasi-Newton solvers judge trial steps by the energy, whose decrease (∝ residual²)
# can fall below rounding near relative residual 1e-7 in float64 (on nonlinear networks):
# where that matters they are asked for no less (`line_search_floor`).
LINE_SEARCH_FLOOR = 1e-7
LINE_SEARCH = ("lbfgs", "bfgs")
# Configurations tested besides the registry's: the Krylov solvers with the depth
# preconditioner (which differ from the plain ones on residual networks only) and Adam.
EXTRAS = {
    "pcg": lambda rtol, steps: pc.ConjugateGradient(rtol=rtol, preconditioner=pc.DepthPreconditioner(), **steps),
    "pnewton": lambda rtol, steps: pc.NewtonKrylov(rtol=rtol, preconditioner=pc.DepthPreconditioner(), **steps),
    "adam": lambda rtol, steps: pc.OptaxSolver(optax.adam(0.02), rtol=rtol, **steps),
}


def has_skips(model) -> bool:
    return any(layer.skip for layer in model.layers[1:-1])


def solver_matrix(model, *, rtol, step_size, max_steps=None, extras=(), line_search_floor=0.0):
    """Every solver of the registry (pc.SOLVERS, built by pc.make_solver with β =
    `step_size`), then the `extras` (names of EXTRAS), by name. The tests' solver lists
    all come from here, so a solver added to the registry is tested everywhere."""
    budget = {} if max_steps is None else {"max_steps": max_steps}
    solvers = {
        name: pc.make_solver(name, model, rtol=max(rtol, line_search_floor) if name in LINE_SEARCH else rtol,
                             step_size=step_size, **budget)
        for name in pc.SOLVERS
    }
    return solvers | {name: EXTRAS[name](rtol, budget) for name in extras}


def all_solvers(model, max_steps=20_000, rtol=1e-10):
    """The matrix of test_infer and test_sharding: the registry with β = 0.2, preconditioned
    conjugate gradients and Adam."""
    return solver_matrix(model, rtol=rtol, step_size=0.2, max_steps=max_steps, extras=("pcg", "adam"))


SOLVER_IDS = list(pc.SOLVERS) + ["pcg", "adam"]  # the names all_solvers returns


def data(key, batch, input_dim, output_dim, *, one_hot=False, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (batch, input_dim), dtype)
    if one_hot:
        labels = jax.random.randint(ky, (batch,), 0, output_dim)
        return x, jax.nn.one_hot(labels, output_dim, dtype=dtype)
    return x, jax.random.normal(ky, (batch, output_dim), dtype)


@contextlib.contextmanager
def annotations_unchecked():
    """The runtime annotation checks of the test run (tests/conftest.py) off inside the
    block: for a call that tests pcscale's own validation of a wrongly typed argument."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
