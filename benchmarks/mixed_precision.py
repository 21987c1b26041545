"""Certifying a float32 network below its rounding floor: stall detection, mixed
precision and float64, on the case of docs/inference.md ("The rounding floor").

    python benchmarks/mixed_precision.py [--out PATH] [--repeats N] [--width N] [--depth L] [--batch B]

The network is Figure 4a's tanh residual MLP under μPC with cross-entropy output
(`residual_mlp(784, 256, 10, 32)`), on one batch of 64 MNIST images from the data root
(`PCSCALE_DATA`), or scikit-learn's digits when MNIST is absent (recorded in the JSON).
Three solves from the feedforward state, each to relative residual 1e-6:

- `float32`: `NewtonKrylov(rtol=1e-6, DepthPreconditioner())` on the float32 model:
  1e-6 lies below float32's floor, so it must end `stalled`; we record how many steps
  and seconds that takes;
- `mixed`: `MixedPrecision(NewtonKrylov(rtol=1e-4, DepthPreconditioner()), rtol=1e-6)`
  on the float32 model;
- `float64`: `NewtonKrylov(rtol=1e-6, DepthPreconditioner())` on the same weights in
  float64.

Each is timed as the median of `--repeats` calls after a warm-up call that compiles it;
the residual of every solution is recomputed in float64. The target: `mixed` converges
and costs no more than 1.5× `float64`'s wall-clock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import environment, time_calls, write_json  # noqa: E402

import pcscale  # noqa: E402
import pcscale.data  # noqa: E402

RTOL = 1e-6
TARGET = 1.5


def batch(size: int):
    dataset = pcscale.data.load_or_default("mnist", n=size, seed=0, flatten=True)
    return jnp.asarray(dataset.x, jnp.float32), jnp.asarray(dataset.y, jnp.float32), dataset.name


def widen(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def true_relative_residual(model, x, y, z) -> float:
    """‖∇_z Σ_i F_i‖ at z over its value at the feedforward state, all in float64."""
    model, x, y = widen(model), widen(x), widen(y)
    z = tuple(widen(z))

    def norm(z):
        grads = jax.grad(lambda z: jnp.sum(jax.vmap(model.energy_one)(z, x, y)))(z)
        return float(jnp.sqrt(sum(jnp.sum(g**2) for g in grads)))

    return norm(z) / norm(tuple(model.init_activities(x)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    env = environment()
    x, y, data_name = batch(args.batch)
    model = pcscale.nn.residual_mlp(x.shape[1], args.width, y.shape[1], args.depth, parameterisation=pcscale.MuPC(),
                                    activation="tanh", output_energy=pcscale.CrossEntropy(), dtype=jnp.float32,
                                    key=jax.random.PRNGKey(0))
    depth = pcscale.DepthPreconditioner()
    runs = {
        "float32": (model, x, y, pcscale.NewtonKrylov(rtol=RTOL, preconditioner=depth)),
        "mixed": (model, x, y, pcscale.MixedPrecision(pcscale.NewtonKrylov(rtol=1e-4, preconditioner=depth), rtol=RTOL)),
        "float64": (widen(model), widen(x), widen(y), pcscale.NewtonKrylov(rtol=RTOL, preconditioner=depth)),
    }
    floor = float(pcscale.residual_floor(model, x, y))
    print(f"device: {env['device_kind']}; data {data_name}; N = {args.width}, L = {args.depth}, B = {args.batch}; "
          f"float32 floor ≈ {floor:.2g}")
    import warnings

    records = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float32 run's tolerance is below its floor, by design
        calls = {name: (lambda run=run: pcscale.infer(run[0], run[1], run[2], solver=run[3])) for name, run in runs.items()}
        times = time_calls(calls, args.repeats, warmup=1)
        for name, (m, xx, yy, solver) in runs.items():
            solution = calls[name]()
            result = next(r for r in ("converged", "max_steps", "stalled", "diverged", "max_time")
                          if bool(solution.result == getattr(pcscale.RESULTS, r)))
            records[name] = {
                "result": result, "steps": int(solution.steps), "grad_evals": int(solution.grad_evals),
                "hvp_evals": int(solution.hvp_evals), "reported_relative_residual": float(solution.relative_residual),
                "true_relative_residual": true_relative_residual(model, x, y, solution.activities),
                "seconds": times[name]["median"], "times": times[name]["times"],
            }
            r = records[name]
            print(f"{name:>8}: {result:>9} after {r['steps']:3d} steps ({r['grad_evals']} gradients, {r['hvp_evals']} HVPs), "
                  f"true relative residual {r['true_relative_residual']:.2g}, {r['seconds']:.2f} s")
    ratio = records["mixed"]["seconds"] / records["float64"]["seconds"]
    ok = records["mixed"]["result"] == "converged" and ratio <= TARGET and records["float32"]["result"] == "stalled"
    print(f"mixed / float64 wall-clock: {ratio:.2f} (target ≤ {TARGET}); {'PASS' if ok else 'MISS'}")
    out = args.out or Path(__file__).resolve().parent / "results" / f"mixed_precision-{env['platform']}.json"
    write_json(out, {"benchmark": "mixed_precision", "argv": sys.argv[1:], "environment": env,
                     "config": {"width": args.width, "depth": args.depth, "batch": args.batch, "data": data_name,
                                "rtol": RTOL, "repeats": args.repeats, "float32_floor_estimate": floor},
                     "runs": records, "mixed_over_float64": ratio, "target": TARGET, "pass": ok})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
