"""Peak memory of an experiment cell against the number of training steps: the lockstep
loop keeps only per-step scalars, so the peak should not grow with T.

Each T runs in a fresh subprocess (so that peaks do not carry over) training a linear
residual MLP (N = 512, L = 8, B = 64, float64, closed-form inference, Adam), and reports
the process's peak resident memory and the largest total size of live JAX arrays
sampled after every step. One step's gradients are as large as the model (13 MB here), so
a loop that kept them would grow by that much per step.

    python benchmarks/experiment_memory.py           # T = 10, 50, 200

Writes benchmarks/results/experiment-memory-<platform>.json. Not run by the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, equinox as eqx
import pcscale as pc
from pcscale import experiments as ex
steps = int(sys.argv[1])
keys = jax.random.split(jax.random.PRNGKey(0), 3)
model = pc.nn.residual_mlp(256, 512, 10, 8, parameterisation=pc.MuPC(), activation="linear",
                           dtype=jnp.float64, key=keys[0])
x = jax.random.normal(keys[1], (64, 256), jnp.float64)
y = jax.nn.one_hot(jax.random.randint(keys[2], (64,), 0, 10), 10, dtype=jnp.float64)
live = []
start = time.perf_counter()
trace = ex.train_lockstep(model, x, y, optimiser=pc.make_optimiser(model, pc.Adam(1e-3)),
                          inference=ex.ClosedForm(), steps=steps,
                          on_step=lambda t: live.append(sum(a.nbytes for a in jax.live_arrays())))
seconds = time.perf_counter() - start
model_bytes = sum(l.nbytes for l in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
print(json.dumps({"steps": steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "max_live_array_mb": max(live) / 2**20, "last_live_array_mb": live[-1] / 2**20,
                  "model_mb": model_bytes / 2**20, "seconds": seconds,
                  "median_step_s": sorted(trace.wall_time[1:])[len(trace.wall_time[1:]) // 2]}))
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import environment, write_json

    rows = []
    for steps in (10, 50, 200):
        done = subprocess.run([sys.executable, "-c", CHILD, str(steps)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"T = {steps:4d}: peak RSS {row['peak_rss_mb']:7.1f} MB, max live arrays {row['max_live_array_mb']:6.1f} MB "
              f"(model {row['model_mb']:.1f} MB), median step {row['median_step_s'] * 1e3:.1f} ms")
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS at T = {rows[-1]['steps']} / at T = {rows[0]['steps']}: {growth:.3f}")
    env = environment()
    write_json(Path(__file__).resolve().parent / "results" / f"experiment-memory-{env['platform']}.json",
               {"environment": env, "rows": rows, "rss_growth": growth})


if __name__ == "__main__":
    main()
