"""Full float32 matmul precision, set once where pcscale's programs are traced.

TF32, the default float32 matmul precision on recent GPUs, keeps ~10 mantissa bits: on an
H100 it stalled GD inference at a relative residual of ~1e-2 where full float32 reached
1e-4 in 266 steps. So every jitted entry point of pcscale is traced at full precision
(`precise_jit`), and so is every public function that can run eagerly or inside a
user's own `jit` (`full_precision`); the functions they call set nothing themselves. The
precision is read when an operation is traced, so the setting reaches every matrix
product of the program, its gradients included. On CPUs it changes nothing."""

from __future__ import annotations

import functools

import equinox as eqx
import jax

FULL_PRECISION = "highest"


def full_precision(function):
    """`function`, traced (or run) at full float32 matmul precision."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision(FULL_PRECISION):
            return function(*args, **kwargs)

    return wrapper


def precise_jit(function):
    """`eqx.filter_jit` of `function`, traced at full float32 matmul precision."""
    return eqx.filter_jit(full_precision(function))
