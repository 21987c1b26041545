"""Throughput of PC training on 1, 2 and 4 devices: data parallel (one batch split over
the devices) and cell parallel (one independent model per device).

    python benchmarks/scaling.py [--counts 1 2 4] [--repeats N] [--quick] [--out PATH]
    python benchmarks/scaling.py --real          # the machine's own devices (e.g. GPUs)

By default every device count runs in its own Python process with
XLA_FLAGS=--xla_force_host_platform_device_count=n (XLA reads the flag once, at start),
so the n "devices" are slices of this machine's CPU: the check there is that the code
runs and scales at all, not speed. With `--real`, the counts are real devices (1 … all
of them) in one process. Prints a table and writes JSON (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

# Same workload for every count: a μPC tanh residual MLP 784 → 512 × 8 → 10, MSE on
# one-hot targets, float32, Adam(1e-3), GD inference with a fixed budget of T steps.
WORKLOAD = dict(input_dim=784, width=512, output_dim=10, depth=8, batch=256, T=20, step_size=0.3)


def _problem(key, batch: int):
    import jax
    import jax.numpy as jnp

    import pcscale as pc

    w = WORKLOAD
    model_key, x_key, y_key = jax.random.split(key, 3)
    model = pc.nn.residual_mlp(w["input_dim"], w["width"], w["output_dim"], w["depth"], activation="tanh",
                               parameterisation=pc.MuPC(), dtype=jnp.float32, key=model_key)
    x = jax.random.normal(x_key, (batch, w["input_dim"]), jnp.float32)
    y = jax.nn.one_hot(jax.random.randint(y_key, (batch,), 0, w["output_dim"]), w["output_dim"], dtype=jnp.float32)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))
    solver = pc.GradientDescent(step_size=w["step_size"], rtol=0.0, atol=0.0, max_steps=w["T"])
    return model, x, y, optimiser, solver


def measure(count: int, repeats: int) -> dict:
    """Throughput on the first `count` devices of this process, both ways."""
    import equinox as eqx
    import jax
    from _common import time_calls

    import pcscale as pc

    devices = jax.devices()[:count]
    batch = WORKLOAD["batch"]
    model, x, y, optimiser, solver = _problem(jax.random.PRNGKey(0), batch)
    state = optimiser.init(eqx.filter(model, eqx.is_array))

    # Data parallel: one batch of B split over the devices.
    mesh = pc.make_data_mesh(devices)
    xs, ys = pc.shard_batch((x, y), mesh)
    model_r, state_r = pc.replicate((model, state), mesh)

    def data_parallel():
        return pc.pc_step(model_r, state_r, xs, ys, optimiser=optimiser, solver=solver)

    # Cell parallel: `count` independent models and batches of B, one per device, each
    # step launched from its own thread (as the sweep runner does).
    cells = []
    for index, device in enumerate(devices):
        with jax.default_device(device):
            m, cx, cy, _, _ = _problem(jax.random.PRNGKey(index), batch)
            cells.append(jax.device_put((m, optimiser.init(eqx.filter(m, eqx.is_array)), cx, cy), device))

    def one_cell(cell):
        m, s, cx, cy = cell
        return pc.pc_step(m, s, cx, cy, optimiser=optimiser, solver=solver)

    def cell_parallel():
        outputs = [None] * len(cells)

        def run(i):
            outputs[i] = jax.block_until_ready(one_cell(cells[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cells))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outputs

    timings = time_calls({"data_parallel": data_parallel, "cell_parallel": cell_parallel}, repeats)
    steps = int(data_parallel()[2].inference.steps)
    return {
        "devices": count,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "inference_steps": steps,
        "data_parallel": {**timings["data_parallel"], "examples_per_s": batch / timings["data_parallel"]["median"]},
        "cell_parallel": {**timings["cell_parallel"],
                          "examples_per_s": count * batch / timings["cell_parallel"]["median"]},
    }


def _child(count: int, repeats: int) -> dict:
    """`measure` in a fresh process that sees `count` forced CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run([sys.executable, __file__, "--child", str(count), "--repeats", str(repeats)],
                               env=env, capture_output=True, text=True, cwd=Path(__file__).parent)
    if completed.returncode != 0:
        raise RuntimeError(f"the {count}-device run failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--real", action="store_true", help="use this machine's devices instead of forced CPU ones")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    if args.child is not None:
        print(json.dumps(measure(args.child, repeats)))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    import jax
    from _common import environment, write_json

    if args.real:
        counts = [c for c in args.counts if c <= jax.device_count()] or [1]
        rows = [measure(count, repeats) for count in counts]
        mode = f"real {jax.default_backend()} devices"
    else:
        rows = [_child(count, repeats) for count in args.counts]
        mode = "forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=n), one process per count"
    base = rows[0]
    for row in rows:
        for way in ("data_parallel", "cell_parallel"):
            speedup = row[way]["examples_per_s"] / base[way]["examples_per_s"]
            row[way]["speedup"] = speedup
            row[way]["efficiency"] = speedup * base["devices"] / row["devices"]
    print(f"PC training throughput, {mode}")
    print(f"workload: {WORKLOAD}")
    print(f"{'devices':>7}  {'data parallel ex/s':>18}  {'efficiency':>10}  {'cell parallel ex/s':>18}  "
          f"{'efficiency':>10}")
    for row in rows:
        d, c = row["data_parallel"], row["cell_parallel"]
        print(f"{row['devices']:>7}  {d['examples_per_s']:>18.1f}  {d['efficiency']:>10.2f}  "
              f"{c['examples_per_s']:>18.1f}  {c['efficiency']:>10.2f}")
    platform = rows[0]["platform"]
    out = args.out or Path(__file__).parent / "results" / f"scaling-{'real-' if args.real else 'forced-'}{platform}.json"
    write_json(out, {
        "benchmark": "scaling", "mode": mode, "workload": WORKLOAD, "repeats": repeats, "rows": rows,
        "efficiency": "throughput(n) / (n · throughput(1)), both measured in this run",
        "environment": environment(),
    })
    print(f"written {out}")


if __name__ == "__main__":
    main()
