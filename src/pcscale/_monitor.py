"""The inference loop's view of the wall clock: progress lines for long solves and time
budgets (`max_time`).

JAX has no clock inside a compiled loop, so the loop asks the host. Two mechanisms, by
what they cost (measured on a CPU, benchmarks/inference_monitor.py):

- **Progress** uses `jax.debug.callback`, which returns nothing to the device: the loop
  reports its step, relative residual and energy every `stride` steps, a stride chosen
  at trace time from the estimated cost of a step so that reports come about once a
  second of work; the host prints a line when 10 s have passed since the last one.
- **A time budget** needs the elapsed time *on the device*, so it uses `io_callback`,
  which returns it. A loop containing a returning host call runs about 10% slower per
  step on a CPU (even when the call is rare), so the call is made only when `max_time`
  is set, and then only about once a second (each call measures the steps per second
  and schedules the next).

Solvers with neither `progress` nor `max_time` compile no host call at all, and a
solve shorter than one report stride makes none.
"""

from __future__ import annotations

import math
import sys
import threading
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jaxtyping import Array, Float, Int

from ._progress import write

_EPOCH = time.monotonic()
# Milliseconds travel as int32, modulo 2³¹ (24 days): differences are taken modulo the
# same number, so a process may run for longer than that.
_WRAP = 2**31
CHECK_INTERVAL = 1.0  # seconds between the time budget's host calls
PROGRESS_INTERVAL = 10.0  # seconds between progress lines
_MAX_STRIDE = 1 << 20
# Progress reports are made every `stride` steps, about one per second of work: the
# floating-point operations a step costs are estimated at trace time, and divided into
# what a device of the kind does per second (CPUs: ~1e11 measured on 2 cores; others:
# a conservative 2e13). A report forces the loop to wait for the host, so denser reports
# would cost measurable time (benchmarks/inference_monitor.py).
_FLOPS_PER_SECOND = {"cpu": 1e11}
_ACCELERATOR_FLOPS = 2e13
_MAX_PROGRESS_STRIDE = 1 << 16

_solves: dict[int, list] = {}  # token → [first report, last line (or first report), last step]
_lock = threading.Lock()


def _now_ms() -> int:
    return int((time.monotonic() - _EPOCH) * 1000) % _WRAP


def _since(now: int, then) -> float:
    return ((now - int(then)) % _WRAP) / 1000.0


def _write(line: str) -> None:
    # Progress goes to standard error, like the progress bars, so that it never mixes
    # with a program's output; through `_progress.write`, so that a line lands above a
    # live bar rather than inside it.
    write(line, sys.stderr)


class Clock(eqx.Module):
    """What the loop carries for a time budget: the solve's start (host milliseconds),
    the step of the next host call, the step and time of the last one and the elapsed
    seconds then."""

    start: Int[Array, ""]
    next_check: Int[Array, ""]
    last_step: Int[Array, ""]
    last_ms: Int[Array, ""]
    elapsed: Float[Array, ""]


def start_clock() -> Clock:
    """Read the clock once, at the start of a solve with a time budget."""
    now = io_callback(lambda: np.int32(_now_ms()), jax.ShapeDtypeStruct((), jnp.int32))
    zero = jnp.zeros((), jnp.int32)
    return Clock(now, zero + 1, zero, now, jnp.zeros((), jnp.float32))


def progress_stride(model, z, cost: int) -> int:
    """Steps between progress reports for `model`, activities `z` and a step costing
    `cost` gradients, about one per second of work (static: from shapes only).

    A gradient costs about 6 × (activity elements) × (a layer's width) operations;
    the width is estimated as √(parameters per weight array), which gives N for a dense
    layer and a few channels for a convolution."""
    weights = [leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)) if leaf.ndim >= 2]
    width = math.sqrt(sum(weights) / len(weights)) if weights else 1.0
    elements = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(z))
    flops = 6.0 * elements * width * cost
    rate = _FLOPS_PER_SECOND.get(jax.default_backend(), _ACCELERATOR_FLOPS)
    return int(min(max(rate / max(flops, 1.0), 1), _MAX_PROGRESS_STRIDE))


def _report(token, step, relative, energy, label):
    now = time.monotonic()
    with _lock:
        record = _solves.get(int(token))
        if record is None or int(step) <= record[2]:
            # The solve's first report (a step that went back is a new solve of the same
            # problem): its clock starts here.
            if len(_solves) > 4096:  # forget the oldest solves
                for old in sorted(_solves, key=lambda k: _solves[k][0])[:2048]:
                    del _solves[old]
            _solves[int(token)] = [now, now, int(step)]
            return
        start, last, _ = record
        record[2] = int(step)
        if now - last < PROGRESS_INTERVAL:
            return
        record[1] = now
    _write(f"  {label}: step {int(step)}, relative residual {float(relative):.3g}, energy {float(energy):.6g}, "
           f"{now - start:.0f} s")


def solve_token(energy0) -> Int[Array, ""]:
    """A number that tells concurrent solves apart without asking the host: the bits of
    the starting energy (distinct problems start at distinct energies)."""
    bits = jax.lax.bitcast_convert_type(energy0.astype(jnp.float32), jnp.int32)
    return bits


def report_progress(token, step, relative, energy, *, stride: int, label: str = "inference") -> None:
    """Every `stride` steps, tell the host (nothing is returned, so the loop need not
    wait for it) the step, relative residual and energy; it prints them if 10 s passed
    since the solve's last line (or its first report)."""
    jax.lax.cond(
        step % stride == 0,
        lambda: jax.debug.callback(lambda *args: _report(*args, label=label), token, step, relative, energy),
        lambda: None,
    )


def _tick(step, start, last_step, last_ms, max_time):
    now = _now_ms()
    step, last_step = int(step), int(last_step)
    interval = min(CHECK_INTERVAL, max(float(max_time) / 20, 1e-3))
    seconds, done = _since(now, last_ms), step - last_step
    if seconds > 0 and done > 0:
        stride = int(done / seconds * interval)
    else:  # faster than the clock's resolution: look again after twice as many steps
        stride = 2 * max(done, 1)
    stride = min(max(stride, 1), _MAX_STRIDE)
    return np.int32(now), np.int32(step + stride), np.float32(_since(now, start))


def read_clock(clock: Clock, step, *, max_time) -> Clock:
    """For a time budget: at the scheduled step, one host call returning the elapsed
    seconds and the step of the next call."""

    def call():
        shapes = (
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.float32),
        )
        now, next_check, elapsed = io_callback(
            _tick, shapes, step, clock.start, clock.last_step, clock.last_ms, jnp.asarray(max_time, jnp.float32)
        )
        return Clock(clock.start, next_check, step, now, elapsed)

    return jax.lax.cond(step >= clock.next_check, call, lambda: clock)
