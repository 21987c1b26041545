"""Helpers shared by the benchmarks: timing, environment record, atomic JSON output."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jaxlib
import numpy as np
import optax

import pcscale

WARMUP = 3


def time_calls(calls: dict, repeats: int, warmup: int = WARMUP, *, interleave: bool = True) -> dict:
    """Median (and spread) of `repeats` timed calls of each `fn()` after `warmup` untimed ones
    (the first compiles). With `interleave`, calls are made round-robin so that drift of the
    machine (clock, other load) hits every quantity alike; without it, each quantity is timed
    in its own block, in the steady state of repeated calls (caches warm with its own data).
    Every call starts from the same inputs (no state is chained), so each repeat does
    identical work."""
    times = {label: [] for label in calls}

    def timed(label, fn):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times[label].append(time.perf_counter() - start)

    if interleave:
        for fn in calls.values():
            for _ in range(warmup):
                jax.block_until_ready(fn())
        for _ in range(repeats):
            for label, fn in calls.items():
                timed(label, fn)
    else:
        for label, fn in calls.items():
            for _ in range(warmup):
                jax.block_until_ready(fn())
            for _ in range(repeats):
                timed(label, fn)
    return {label: {"median": statistics.median(t), "min": min(t), "max": max(t), "times": t}
            for label, t in times.items()}


def environment() -> dict:
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "equinox": eqx.__version__,
                     "optax": optax.__version__, "numpy": np.__version__, "pcscale": pcscale.__version__},
        "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, payload: dict) -> None:
    """Atomic write (temp file in the same directory, then os.replace): no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile creates 0600; results are for sharing
    os.replace(handle.name, path)
