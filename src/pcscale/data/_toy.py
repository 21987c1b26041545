"""The paper's toy task (docs/background.md §6.1), exactly."""

from __future__ import annotations

import numpy as np


def toy(*, input_dim: int = 40, samples: int = 20, key) -> tuple[np.ndarray, np.ndarray]:
    """The toy dataset of the paper: X ∈ ℝ^{D×P} with i.i.d. N(0, 1) entries drawn from
    `key` (a JAX PRNG key, shape (D, P)); the inputs are its P columns; the targets are
    +1 for the first P/2 samples and −1 for the rest. Always MSE and full batch.

    **Arguments:**

    - `input_dim`: D. Default 40.
    - `samples`: P, even. Default 20.
    - `key`: the data key, e.g. `jax.random.key(0)`.

    The draw is made in float64 when JAX's 64-bit mode is on and in float32 otherwise
    (the numbers differ between the two for one key).

    **Returns:** `(x, y)` as float64 NumPy arrays of shapes (P, D) and (P, 1)
    (cast them to your model's dtype). For the DMFT, K_x = XᵀX/D = x @ x.T / D.
    """
    import jax

    for name, value in (("input_dim", input_dim), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}; the paper uses 40 and 20.")
    if samples % 2:
        raise ValueError(f"`samples` must be even (half +1, half −1 targets), got {samples}; the paper uses 20.")
    # The draw is made in float64 when JAX's 64-bit mode is on (the theory experiments'
    # setting) and in float32 otherwise; the two give different numbers for one key.
    dtype = jax.numpy.float64 if jax.config.read("jax_enable_x64") else jax.numpy.float32
    matrix = np.asarray(jax.random.normal(key, (input_dim, samples), dtype), dtype=np.float64)
    x = matrix.T.copy()
    y = np.where(np.arange(samples) < samples // 2, 1.0, -1.0)[:, None]
    return x, y
