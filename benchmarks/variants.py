"""Inference cost of the PC family to a certified residual, and the cost of an iPC step.

    python benchmarks/variants.py [--out PATH] [--quick] [--widths 64] [--depths 32,128]
                                  [--repeats N] [--gd-budget B] [--amortiser-steps K]

The network is the one of Figure 4a (as benchmarks/certified.py): a tanh μPC residual
MLP 3072 → N × L → 10, MSE, B = 64 inputs x ~ N(0, 1) with one-hot targets, float64. For
every (N, L), evaluations (gradients + Hessian-vector products + linear passes) and
wall-clock to relative residual 1e-6 of the state-space energy, from the feedforward
state unless said otherwise:

- `gd-states`: gradient descent on the activities, β = 0.3 per sample, run for
  `--gd-budget` steps and EXTRAPOLATED from the last quarter's contraction (a lower
  bound, as in certified.py);
- `newton-gn`: Newton–Krylov with the Gauss–Newton preconditioner (the best certified
  solver of certified.py);
- `epc-gd`: error-based PC, gradient descent on the errors (`ErrorCoordinates`,
  β = `--epc-step`), extrapolated alike if its budget runs out;
- `epc-newton`: Newton–Krylov on the errors, no preconditioner (at most 300 inner CG
  iterations per Newton step and 300 s, reported unconverged if it runs out);
- `hybrid`: `newton-gn` from the guess of an amortiser trained for `--amortiser-steps`
  hybrid steps (weights frozen, fresh batches from the same distribution), on a held-out
  batch, against `newton-gn` from the feedforward state on that batch;

and the cost of one iPC iteration (activities and weights updated together) against a
certified PC step (`newton-gn`, cold) and a plain jitted BP step (Adam), timed
interleaved. Every measurement is saved to the output file as it finishes, and a rerun keeps
what is there (it resumes, within a row too; `--fresh` recomputes).
Prints a table with the winner per depth and writes JSON with the device
and versions (default results/variants-<platform>.json). Target (printed, never
failing): at the deepest L, the best method needs ≥ 100× fewer evaluations than
`gd-states`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from _common import environment, time_calls, write_json  # noqa: E402
from certified import BATCH, LEARNING_RATE, RTOL, build, counts, plain_bp_step, run_gd, run_solver  # noqa: E402

import pcscale  # noqa: E402

ITERATIONS = 10  # iPC iterations timed per call


def newton_gn():
    return pcscale.NewtonKrylov(rtol=RTOL, preconditioner=pcscale.GaussNewtonPreconditioner())


def epc_newton():
    """Newton–Krylov on the errors, without a preconditioner, with bounded inner solves
    and a wall-clock budget (deep networks can make its unpreconditioned inner CG long):
    an unconverged result is reported as such, never extrapolated."""
    inner = pcscale.NewtonKrylov(max_inner_steps=300)
    return pcscale.ErrorCoordinates(inner, rtol=RTOL, max_steps=100, max_time=300.0)


def run_epc_gd(model, x, y, step_size: float, budget: int) -> dict:
    """ePC gradient descent to 1e-6, or its budget with the contraction of the last
    quarter extrapolated (a lower bound)."""
    solver = pcscale.ErrorCoordinates(pcscale.GradientDescent(step_size=step_size), rtol=RTOL, max_steps=budget)
    solution = pcscale.infer(model, x, y, solver=solver)
    timing = time_calls({"solve": lambda: pcscale.infer(model, x, y, solver=solver)}, 1, warmup=0)
    record = counts(solution.stats) | {"seconds_measured": timing["solve"]["median"], "budget": budget}
    if record["result"] == "converged":
        return record | {"seconds": timing["solve"]["median"], "extrapolated": False}
    quarter = max(1, budget // 4)
    head = pcscale.infer(model, x, y, solver=pcscale.ErrorCoordinates(
        pcscale.GradientDescent(step_size=step_size), rtol=0.0, max_steps=budget - quarter))
    rho = (float(solution.stats.residual) / float(head.stats.residual)) ** (1.0 / quarter)
    if not (rho < 1.0 and record["result"] != "diverged"):
        return record | {"evaluations": None, "seconds": None, "extrapolated": True, "contraction": rho}
    more = math.log(float(solution.stats.relative_residual) / RTOL) / -math.log(rho)
    per_step_evaluations = record["evaluations"] / max(record["steps"], 1)
    per_step_seconds = timing["solve"]["median"] / max(record["steps"], 1)
    return record | {"evaluations": int(record["evaluations"] + more * per_step_evaluations),
                     "seconds": timing["solve"]["median"] + more * per_step_seconds,
                     "extrapolated": True, "contraction": rho}


def run_hybrid(width: int, depth: int, model, steps: int, repeats: int) -> dict:
    """An amortiser trained for `steps` hybrid steps with the weights frozen, then
    newton-gn from its guess against newton-gn from the feedforward state, on a
    held-out batch."""
    amortiser = pcscale.Amortiser.from_model(model)
    frozen, amortiser_optimiser = optax.sgd(0.0), optax.adam(1e-3)
    state = frozen.init(eqx.filter(model, eqx.is_array))
    a_state = amortiser_optimiser.init(eqx.filter(amortiser, eqx.is_array))
    solver = newton_gn()
    for key in jax.random.split(jax.random.key(100), steps):
        _, x, y = build(width, depth, jnp.float64, key)
        model, amortiser, state, a_state, _, _ = pcscale.hybrid_step(
            model, amortiser, state, a_state, x, y, optimiser=frozen, amortiser_optimiser=amortiser_optimiser,
            solver=solver)
    _, x, y = build(width, depth, jnp.float64, jax.random.key(999))
    guess = amortiser(x)
    warm = pcscale.infer(model, x, y, solver=solver, z0=guess)
    cold = pcscale.infer(model, x, y, solver=solver)
    timing = time_calls({"warm": lambda: pcscale.infer(model, x, y, solver=solver, z0=amortiser(x)),
                         "cold": lambda: pcscale.infer(model, x, y, solver=solver)}, repeats, warmup=1)
    return {"amortiser_steps": steps, "from_guess": counts(warm.stats) | {"seconds": timing["warm"]["median"]},
            "from_feedforward": counts(cold.stats) | {"seconds": timing["cold"]["median"]},
            "evaluations": int(warm.stats.evaluations), "seconds": timing["warm"]["median"],
            "result": counts(warm.stats)["result"]}


def step_costs(model, x, y, repeats: int) -> dict:
    """One iPC iteration (from `ITERATIONS` per call), a cold certified PC step and a
    plain BP step, timed interleaved."""
    optimiser = pcscale.make_optimiser(model, pcscale.Adam(LEARNING_RATE))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    solver = newton_gn()
    calls = {
        "bp_plain": plain_bp_step(model, x, y),
        "pc_certified": lambda: pcscale.pc_step(model, state, x, y, optimiser=optimiser, solver=solver),
        "ipc": lambda: pcscale.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.3,
                                        iterations=ITERATIONS),
    }
    timing = time_calls(calls, repeats)
    bp = timing["bp_plain"]["median"]
    per_iteration = timing["ipc"]["median"] / ITERATIONS
    return {"seconds": {"bp_plain": bp, "pc_certified": timing["pc_certified"]["median"],
                        "ipc_iteration": per_iteration},
            "ipc_iteration_over_bp": per_iteration / bp,
            "pc_certified_over_bp": timing["pc_certified"]["median"] / bp}


def _measure(name, model, x, y, width, depth, args, budget, repeats, amortiser_steps) -> dict:
    """One cell of a row: a method's inference cost, or the step costs."""
    if name == "gd-states":
        return run_gd(model, x, y, budget)
    if name == "newton-gn":
        return run_solver(model, x, y, newton_gn(), repeats)
    if name == "epc-gd":
        return run_epc_gd(model, x, y, args.epc_step, budget)
    if name == "epc-newton":
        return run_solver(model, x, y, epc_newton(), repeats)
    if name == "hybrid":
        return run_hybrid(width, depth, model, amortiser_steps, repeats)
    return step_costs(model, x, y, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="N = 32, L ∈ {4, 8}, small budgets, one repeat")
    parser.add_argument("--widths", default="64")
    parser.add_argument("--depths", default="32,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gd-budget", type=int, default=2000)
    parser.add_argument("--epc-step", type=float, default=0.3)
    parser.add_argument("--amortiser-steps", type=int, default=8)
    parser.add_argument("--fresh", action="store_true",
                        help="recompute every row (default: keep the rows already in --out, so a run resumes)")
    args = parser.parse_args(argv)
    widths = [32] if args.quick else [int(v) for v in args.widths.split(",")]
    depths = [4, 8] if args.quick else [int(v) for v in args.depths.split(",")]
    repeats = 1 if args.quick else args.repeats
    budget = 200 if args.quick else args.gd_budget
    amortiser_steps = 2 if args.quick else args.amortiser_steps
    out = args.out or Path(__file__).parent / "results" / f"variants-{jax.devices()[0].platform}.json"
    rows = []
    if out.exists() and not args.fresh:
        previous = json.loads(out.read_text())
        if previous.get("quick") == args.quick and previous.get("rtol") == RTOL:
            rows = list(previous["rows"])
            print(f"resuming {out}: keeping {len(rows)} row(s) already measured (--fresh recomputes them)")
    done = {(r["width"], r["depth"]) for r in rows if "winner" in r}
    partial = {(r["width"], r["depth"]): r for r in rows if "winner" not in r}
    rows = [r for r in rows if "winner" in r]
    methods = ("gd-states", "newton-gn", "epc-gd", "epc-newton", "hybrid")
    for width in widths:
        for depth in depths:
            if (width, depth) in done:
                continue
            model, x, y = build(width, depth, jnp.float64, jax.random.key(0))
            row = partial.get((width, depth), {"width": width, "depth": depth})
            if len(row) > 2:
                kept = ", ".join(k for k in row if k not in ("width", "depth"))
                print(f"N={width} L={depth}: resuming after {kept}")
            for name in (*methods, "steps"):  # each measurement saved as it finishes: a rerun resumes
                if name not in row:
                    row[name] = _measure(name, model, x, y, width, depth, args, budget, repeats, amortiser_steps)
                    write_json(out, {"environment": environment(), "rtol": RTOL, "batch": BATCH,
                                     "rows": rows + [row], "quick": args.quick, "complete": False})

            def certified(m, row=row):
                record = row[m]
                return record.get("evaluations") is not None and (
                    record.get("result") == "converged" or record.get("extrapolated", False))

            ranked = sorted((m for m in methods if certified(m)), key=lambda m: row[m]["evaluations"])
            row["winner"] = ranked[0] if ranked else None
            rows.append(row)
            write_json(out, {"environment": environment(), "rtol": RTOL, "batch": BATCH, "rows": rows,
                             "quick": args.quick, "complete": False})
            cells = []
            for m in methods:
                ev = row[m].get("evaluations")
                mark = "~" if row[m].get("extrapolated") else ""
                cells.append(f"{m} {mark}{ev if ev is not None else 'n/a'}")
            steps = row["steps"]
            print(f"N={width:4d} L={depth:4d}  " + "  ".join(cells) + f"  winner {row['winner']}  "
                  f"iPC iteration/BP {steps['ipc_iteration_over_bp']:.1f}×  certified step/BP "
                  f"{steps['pc_certified_over_bp']:.1f}×", flush=True)
    targets = []
    deepest = max(r["depth"] for r in rows)
    for row in rows:
        if row["depth"] != deepest or row["winner"] is None or row["gd-states"].get("evaluations") is None:
            continue
        ratio = row["gd-states"]["evaluations"] / row[row["winner"]]["evaluations"]
        met = ratio >= 100
        targets.append({"name": f"N={row['width']} L={deepest}: gd-states / best ≥ 100", "value": ratio,
                        "target": 100.0, "met": met})
        print(f"{'PASS' if met else 'MISS'}  N={row['width']} L={deepest}: gd-states needs {ratio:.0f}× the "
              f"evaluations of {row['winner']}")
    write_json(out, {"environment": environment(), "rtol": RTOL, "batch": BATCH, "rows": rows, "targets": targets,
                     "quick": args.quick, "complete": True})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
