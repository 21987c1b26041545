"""Certified inference and the certified training step against BP, over width and depth.

    python benchmarks/certified.py [--out PATH] [--quick] [--widths 64,256] [--depths 8,16,32,64,128]
                                   [--repeats N] [--gd-budget B] [--no-float32]

The network is the one of Figure 4a: `pcscale.nn.residual_mlp(3072, N, 10, L,
parameterisation=MuPC(), activation="tanh")`, MSE output, a batch of B = 64 inputs
x ~ N(0, 1) with one-hot targets of uniform labels, float64. For every (N, L):

- inference to relative residual 1e-6 from the feedforward state by
  * `newton-gn`: `NewtonKrylov(preconditioner=GaussNewtonPreconditioner())`, the
    Gauss–Newton/Woodbury preconditioner in error coordinates;
  * `newton-depth`: `NewtonKrylov(preconditioner=DepthPreconditioner())`, the previous
    best (auto_solver's former choice for residual networks);
  * `gd`: gradient descent, β = 0.3 per sample, run for `--gd-budget` steps only (it
    needs far more on these networks), its residual recorded, and its step count to 1e-6
    EXTRAPOLATED from the contraction over the last quarter of the budget: a lower bound
    on the true count, since its rate only worsens as the slow modes remain;
  with each solver's counts (gradients, HVPs, linear passes, their sum as `evaluations`)
  and the median wall-clock of `--repeats` timed calls after a compiling one (a solve
  longer than 5 s is timed once; `timed_calls` in the JSON says which);
- the certified training step (`pcscale.pc_step` with the Gauss–Newton solver, Adam
  1e-3): cold (from the feedforward state) and warm (from the equilibrium of the step
  before, `z0=`), against a plain BP step written here (`jax.jit` of `jax.grad` of the
  batch-mean loss and an optax Adam update, at the same float32/float64 matmul
  precision), timed interleaved in the same run.

With float32 (`--no-float32` to skip), one more row per width at the depth 32: the
float32 model certified by `pcscale.MixedPrecision` (float32 iterations, float64
polish), which `auto_solver` picks when 1e-6 lies below float32's rounding floor.

Prints a table and writes JSON (after every row, so a stopped run keeps its rows) with the device and versions (default
results/certified-<platform>.json). Targets (printed PASS/MISS, never failing the
script): at L ∈ {32, 64, 128}, N = 256, `newton-gn` needs ≥ 3× fewer evaluations and ≥ 3×
less wall-clock than `newton-depth`; the cold certified step at N = 256, L = 32 costs
≤ 20× a BP step on a CPU (≤ 10× on a GPU) and the warm one ≤ 10× on a CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from _common import environment, time_calls, write_json  # noqa: E402

import pcscale  # noqa: E402

RTOL = 1e-6
BETA = 0.3
INPUT, OUTPUT, BATCH = 3072, 10, 64
LEARNING_RATE = 1e-3
RESULT_NAMES = ["converged", "max_steps", "stalled", "diverged", "max_time"]


def build(width: int, depth: int, dtype, key):
    k_model, k_x, k_y = jax.random.split(key, 3)
    model = pcscale.nn.residual_mlp(INPUT, width, OUTPUT, depth, parameterisation=pcscale.MuPC(),
                                    activation="tanh", dtype=dtype, key=k_model)
    x = jax.random.normal(k_x, (BATCH, INPUT), dtype)
    y = jax.nn.one_hot(jax.random.randint(k_y, (BATCH,), 0, OUTPUT), OUTPUT, dtype=dtype)
    return model, x, y


def solvers(depth: int) -> dict:
    return {
        "newton-gn": pcscale.NewtonKrylov(rtol=RTOL, preconditioner=pcscale.GaussNewtonPreconditioner()),
        "newton-depth": pcscale.NewtonKrylov(rtol=RTOL, preconditioner=pcscale.DepthPreconditioner(),
                                             max_inner_steps=max(200, 20 * depth)),
    }


def counts(stats) -> dict:
    return {"steps": int(stats.steps), "grad_evals": int(stats.grad_evals), "hvp_evals": int(stats.hvp_evals),
            "vjp_evals": int(stats.vjp_evals), "evaluations": int(stats.evaluations),
            "relative_residual": float(stats.relative_residual), "result": RESULT_NAMES[int(stats.result._value)]}


# A solve that takes longer than this is timed once: its spread is small next to its
# length, and three more runs of the slowest solves (minutes each) would dominate the run.
LONG_SOLVE_SECONDS = 5.0


def run_solver(model, x, y, solver, repeats: int) -> dict:
    solution = pcscale.infer(model, x, y, solver=solver)  # compiles
    first = time_calls({"solve": lambda: pcscale.infer(model, x, y, solver=solver)}, 1, warmup=0)["solve"]
    if first["median"] > LONG_SOLVE_SECONDS or repeats <= 1:
        return counts(solution.stats) | {"seconds": first["median"], "timed_calls": 1}
    timing = time_calls({"solve": lambda: pcscale.infer(model, x, y, solver=solver)}, repeats, warmup=0)
    return counts(solution.stats) | {"seconds": timing["solve"]["median"], "timed_calls": repeats}


def run_gd(model, x, y, budget: int) -> dict:
    """Gradient descent for `budget` steps in four chunks, the last quarter's contraction
    extrapolated to 1e-6 (a lower bound on the true count)."""
    chunk = max(1, budget // 4)
    z = model.init_activities(x)
    first = pcscale.infer(model, x, y, solver=pcscale.GradientDescent(step_size=BETA, rtol=0.0, max_steps=0))
    r0 = float(first.stats.initial_residual)
    solver = pcscale.GradientDescent(step_size=BETA, rtol=0.0, atol=RTOL * r0, max_steps=chunk)
    pcscale.infer(model, x, y, solver=solver, z0=z)  # compiles
    residuals, seconds, steps, converged = [r0], 0.0, 0, False
    for _ in range(4):
        timing = time_calls({"chunk": lambda: pcscale.infer(model, x, y, solver=solver, z0=z)}, 1, warmup=0)
        solution = pcscale.infer(model, x, y, solver=solver, z0=z)
        seconds += timing["chunk"]["median"]
        steps += int(solution.stats.steps)
        z = solution.activities
        residuals.append(float(solution.stats.residual))
        if residuals[-1] <= RTOL * r0:
            converged = True
            break
    per_step = seconds / max(steps, 1)
    record = {"budget": budget, "steps_run": steps, "relative_residual": residuals[-1] / r0, "converged": converged,
              "seconds_per_step": per_step, "evaluations_measured": steps + 1}
    if converged:
        return record | {"evaluations": steps + 1, "seconds": seconds, "extrapolated": False}
    rho = (residuals[-1] / residuals[-2]) ** (1.0 / chunk)
    if not rho < 1.0:
        return record | {"evaluations": None, "seconds": None, "extrapolated": True, "contraction": rho}
    more = math.log(residuals[-1] / (RTOL * r0)) / -math.log(rho)
    total = steps + more
    return record | {"evaluations": int(total) + 1, "seconds": total * per_step, "extrapolated": True,
                     "contraction": rho}


def plain_bp_step(model, x, y):
    """A plain BP step: jax.grad of the batch-mean loss, optax Adam, jax.jit."""
    params, static = eqx.partition(model, eqx.is_array)
    optimiser = optax.adam(LEARNING_RATE)
    state = optimiser.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            m = eqx.combine(p, static)
            with jax.default_matmul_precision("highest"):
                return jnp.mean(jax.vmap(lambda a, b: m.output_energy(m.forward_one(a), b))(x, y))

        grads = jax.grad(loss)(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return lambda: step(params, state)


def training_steps(model, x, y, repeats: int) -> dict:
    optimiser = pcscale.make_optimiser(model, pcscale.Adam(LEARNING_RATE))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    solver = solvers(model.depth)["newton-gn"]
    # The weights after one certified step, and the equilibrium at the weights before it:
    # the warm start of the second step of full-batch training.
    first = pcscale.infer(model, x, y, solver=solver)
    stepped, state1, _ = pcscale.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    calls = {
        "bp_plain": plain_bp_step(stepped, x, y),
        "pc_cold": lambda: pcscale.pc_step(stepped, state1, x, y, optimiser=optimiser, solver=solver),
        "pc_warm": lambda: pcscale.pc_step(stepped, state1, x, y, optimiser=optimiser, solver=solver,
                                           z0=first.activities),
    }
    timing = time_calls(calls, repeats)
    cold = pcscale.pc_step(stepped, state1, x, y, optimiser=optimiser, solver=solver)[2].inference
    warm = pcscale.pc_step(stepped, state1, x, y, optimiser=optimiser, solver=solver, z0=first.activities)[2]
    bp = timing["bp_plain"]["median"]
    return {"seconds": {k: v["median"] for k, v in timing.items()},
            "cold_over_bp": timing["pc_cold"]["median"] / bp, "warm_over_bp": timing["pc_warm"]["median"] / bp,
            "cold": counts(cold), "warm": counts(warm.inference)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="N = 32, L ∈ {4, 8}, one repeat")
    parser.add_argument("--widths", default="64,256")
    parser.add_argument("--depths", default="8,16,32,64,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gd-budget", type=int, default=2000)
    parser.add_argument("--no-float32", action="store_true")
    args = parser.parse_args(argv)
    widths = [32] if args.quick else [int(v) for v in args.widths.split(",")]
    depths = [4, 8] if args.quick else [int(v) for v in args.depths.split(",")]
    repeats = 1 if args.quick else args.repeats
    budget = 200 if args.quick else args.gd_budget
    out = args.out or Path(__file__).parent / "results" / f"certified-{jax.devices()[0].platform}.json"
    rows = []  # written after every row, so a stopped run keeps what it measured
    for width in widths:
        for depth in depths:
            model, x, y = build(width, depth, jnp.float64, jax.random.key(0))
            row = {"width": width, "depth": depth, "dtype": "float64"}
            for name, solver in solvers(depth).items():
                row[name] = run_solver(model, x, y, solver, repeats)
            row["gd"] = run_gd(model, x, y, budget)
            row["step"] = training_steps(model, x, y, repeats)
            rows.append(row)
            write_json(out, {"environment": environment(), "rtol": RTOL, "batch": BATCH, "rows": rows,
                             "targets": None, "quick": args.quick, "complete": False})  # kept if stopped
            gn, nk, step = row["newton-gn"], row["newton-depth"], row["step"]
            print(f"N={width:4d} L={depth:4d}  gn: {gn['evaluations']:5d} ev {gn['seconds']:7.3f}s "
                  f"({gn['result']})  depth: {nk['evaluations']:5d} ev {nk['seconds']:7.3f}s ({nk['result']})  "
                  f"step/BP cold {step['cold_over_bp']:6.1f}× warm {step['warm_over_bp']:6.1f}×", flush=True)
        if not args.no_float32 and not args.quick:
            depth = 32 if 32 in depths else depths[len(depths) // 2]
            model, x, y = build(width, depth, jnp.float32, jax.random.key(0))
            solver = pcscale.auto_solver(model, x, y, rtol=RTOL)
            rows.append({"width": width, "depth": depth, "dtype": "float32", "auto_solver": type(solver).__name__,
                         "auto": run_solver(model, x, y, solver, repeats)})
    targets = []
    for row in rows:
        if row["dtype"] != "float64" or row["width"] != max(widths):
            continue
        gn, nk = row["newton-gn"], row["newton-depth"]
        if row["depth"] >= 32:
            targets.append({"name": f"L={row['depth']}: depth/gn evaluations ≥ 3",
                            "value": nk["evaluations"] / gn["evaluations"], "target": 3.0})
            targets.append({"name": f"L={row['depth']}: depth/gn wall-clock ≥ 3",
                            "value": nk["seconds"] / gn["seconds"], "target": 3.0})
        if row["depth"] == 32:
            gpu = jax.devices()[0].platform == "gpu"
            targets.append({"name": "cold certified step / BP ≤ " + ("10" if gpu else "20"),
                            "value": row["step"]["cold_over_bp"], "target": 10.0 if gpu else 20.0, "below": True})
            if not gpu:
                targets.append({"name": "warm certified step / BP ≤ 10", "value": row["step"]["warm_over_bp"],
                                "target": 10.0, "below": True})
    for target in targets:
        met = target["value"] <= target["target"] if target.get("below") else target["value"] >= target["target"]
        target["met"] = met
        print(f"{'PASS' if met else 'MISS'}  {target['name']}: {target['value']:.2f}")
    write_json(out, {"environment": environment(), "rtol": RTOL, "batch": BATCH, "rows": rows, "targets": targets,
                     "quick": args.quick, "complete": True})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
