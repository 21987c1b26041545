"""The inference loop's view of the wall clock: time budgets (`max_time`) and progress
lines for long solves.

JAX has no clock inside a compiled loop, so the loop asks the host through
`io_callback`. A host call costs tens of microseconds, so it is made about once a
second, never every step: each call measures the steps per second since the last one
and says at which step to call next. Solvers with neither `max_time` nor `progress`
compile no host call at all.
"""

from __future__ import annotations

import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jaxtyping import Array, Float, Int

_EPOCH = time.monotonic()
# Milliseconds travel as int32, modulo 2³¹ (24 days): differences are taken modulo the
# same number, so a process may run for longer than that.
_WRAP = 2**31
CHECK_INTERVAL = 1.0  # seconds between host calls
PROGRESS_INTERVAL = 10.0  # seconds between progress lines
_MAX_STRIDE = 1 << 20


def _now_ms() -> int:
    return int((time.monotonic() - _EPOCH) * 1000) % _WRAP


def _since(now: int, then) -> float:
    return ((now - int(then)) % _WRAP) / 1000.0


class Clock(eqx.Module):
    """What the loop carries to read the clock sparingly: the solve's start, the step
    of the next host call, the step and time of the last one, the time of the last
    progress line, and the elapsed seconds at the last call."""

    start: Int[Array, ""]
    next_check: Int[Array, ""]
    last_step: Int[Array, ""]
    last_ms: Int[Array, ""]
    reported_ms: Int[Array, ""]
    elapsed: Float[Array, ""]


def _write(line: str) -> None:
    # Progress goes to standard error, like tqdm's bars, so that it never mixes with a
    # program's output.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _device():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def start_clock() -> Clock:
    """Read the clock once, at the start of a solve (inside jit)."""
    now = io_callback(lambda: np.int32(_now_ms()), jax.ShapeDtypeStruct((), jnp.int32), sharding=_device())
    zero = jnp.zeros((), jnp.int32)
    return Clock(now, zero + 1, zero, now, now, jnp.zeros((), jnp.float32))


def _tick(step, start, last_step, last_ms, reported_ms, relative, energy, max_time, progress, label):
    now = _now_ms()
    step, last_step = int(step), int(last_step)
    elapsed = _since(now, start)
    interval = CHECK_INTERVAL
    if np.isfinite(max_time):
        interval = min(interval, max(float(max_time) / 20, 1e-3))
    seconds, done = _since(now, last_ms), step - last_step
    if seconds > 0 and done > 0:
        stride = int(done / seconds * interval)
    else:  # faster than the clock's resolution: look again after twice as many steps
        stride = 2 * max(done, 1)
    stride = min(max(stride, 1), _MAX_STRIDE)
    reported = int(reported_ms)
    if progress and _since(now, reported) >= PROGRESS_INTERVAL:
        _write(
            f"  {label}: step {step}, relative residual {float(relative):.3g}, energy "
            f"{float(energy):.6g}, {elapsed:.0f} s"
        )
        reported = now
    return np.int32(now), np.int32(step + stride), np.int32(reported), np.float32(elapsed)


def read_clock(
    clock: Clock, step, relative, energy, *, max_time, progress: bool, label: str = "inference"
) -> Clock:
    """Update `clock` at `step` (one host call, only when the step has come), printing a
    progress line if `progress` and 10 s passed since the last one."""
    limit = jnp.asarray(jnp.inf if max_time is None else max_time, jnp.float32)

    def call():
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.float32),
        )
        now, next_check, reported, elapsed = io_callback(
            lambda *args: _tick(*args, progress, label),
            shapes,
            step,
            clock.start,
            clock.last_step,
            clock.last_ms,
            clock.reported_ms,
            relative.astype(jnp.float32),
            energy.astype(jnp.float32),
            limit,
            sharding=_device(),
        )
        return Clock(clock.start, next_check, step, now, reported, elapsed)

    return jax.lax.cond(step >= clock.next_check, call, lambda: clock)


def _finish(start, steps, relative, label):
    elapsed = _since(_now_ms(), start)
    _write(f"  {label}: finished after {int(steps)} steps and {elapsed:.0f} s, relative residual {float(relative):.3g}")
    return np.int32(0)


def report_end(clock: Clock, steps, relative, *, label: str = "inference") -> None:
    """A closing progress line, for solves that printed progress lines (only those
    make the host call)."""

    def call():
        return io_callback(
            lambda *args: _finish(*args, label),
            jax.ShapeDtypeStruct((), jnp.int32),
            clock.start,
            steps,
            relative.astype(jnp.float32),
            sharding=_device(),
        )

    jax.lax.cond(clock.reported_ms != clock.start, call, lambda: jnp.zeros((), jnp.int32))
