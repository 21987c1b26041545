"""Cost of inference to relative residual 1e-6: gradient descent against the other solvers.

    python benchmarks/inference.py [--out PATH] [--repeats N] [--quick] [--cases init,trained,linear]
                                   [--solvers cg,newton,nesterov,lbfgs,ode] [--gd-budget B] [--chunk C]

The network is the one of Figure 4a: `pcscale.nn.residual_mlp(3072, 512, 10, 32,
parameterisation=MuPC(), activation="tanh")` with MSE output energy, a batch of 64 inputs
x ~ N(0, 1) and one-hot targets of uniform labels. For every solver the script counts the
energy-gradient evaluations and Hessian-vector products (HVPs) it needs to bring the
relative residual ‖∇_z Σ_i F_i‖ / (its value at the feedforward state) to 1e-6, and times
it, in three cases:

- `init`: the network at initialisation;
- `trained`: the same network after 10 `pcscale.pc_step` updates (Adam 1e-3, inference by
  `NewtonKrylov(rtol=1e-6)`) on the same batch;
- `linear`: the same network with the identity activation, where the energy is quadratic
  in the activities and conjugate gradients is the method of choice.

Everything runs in float64. In float32 the relative residual cannot fall much below the
rounding level of the activities: under μPC's readout the initial activity gradient is
itself O(1/N), so the residual floors near N·1e-7 ≈ 5e-5 at N = 512 (docs/inference.md,
"Precision"), and a tolerance of 1e-6 would never be met.

Gradient descent (β = 0.3 per sample) cannot reach 1e-6 on this network in any
reasonable time on a CPU (2 000 steps leave the relative residual near 0.08). It is run
for a step budget B (`--gd-budget`) in chunks of C steps, each chunk warm-started from
the last, and its relative residual is recorded after every chunk. If it reaches 1e-6
within the budget its exact counts are reported. Otherwise the script reports (i) the
measured lower bound, "did not converge within B steps", and (ii) an extrapolated step
count B + log(r_B / 1e-6) / (−log ρ), with ρ = (r_B / r_{B−C})^(1/C) the contraction per
step over the last chunk. Gradient descent's rate only worsens as the run goes on (the
fast modes of the activity Hessian die out first, leaving the slowest ones, and ρ
creeps towards 1), so this extrapolation underestimates the true count: ratios computed
from it understate the other solvers' advantage, and a target met on them is met.

Gradient descent counts steps + 1 gradient evaluations (one at the start) and its
wall-clock is its measured time per step (median over the timed chunks) × its steps. Every
other solver is run by one `pcscale.infer` call from the feedforward state; its counts
are those the solution reports (`grad_evals`, `hvp_evals`; `evaluations` is their sum,
and an HVP costs about two gradients, so grads + 2·HVPs is also given). Its wall-clock is
the median of `--repeats` timed calls, each followed by `jax.block_until_ready`, after a
warm-up call with a one-step budget that compiles the same program (a solver's numbers,
its budget included, are traced rather than compiled in). The script counts XLA
compilations during the timed calls: the count should be 0.

Targets: on the tanh network (both states) the best solver needs ≥ 30× fewer evaluations
and ≥ 10× less wall-clock than gradient descent; on the linear network conjugate
gradients needs ≥ 100× fewer evaluations. They are printed as PASS/MISS; the script does
not fail on a miss.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from _common import environment, time_calls, write_json  # noqa: E402

import pcscale  # noqa: E402

OUTPUT_DIM = 10
RTOL = 1e-6
BETA = 0.3  # gradient descent's per-sample step for μPC networks
NESTEROV_STEP = 0.15
TRAIN_STEPS = 10
LEARNING_RATE = 1e-3
TARGETS = {"nonlinear_evaluations": 30.0, "nonlinear_wall_clock": 10.0, "linear_cg_evaluations": 100.0}
FULL = dict(width=512, depth=32, batch=64, input_dim=3072, gd_budget=20_000, chunk=1_000, ode_budget=1_000)
QUICK = dict(width=32, depth=8, batch=8, input_dim=20, gd_budget=2_000, chunk=200, ode_budget=200)
CASES = ("init", "trained", "linear")
SOLVER_NAMES = {"pcg": "ConjugateGradient+depth", "pnewton": "NewtonKrylov+depth",
                "cg": "ConjugateGradient", "newton": "NewtonKrylov", "nesterov": "Nesterov",
                "lbfgs": "LBFGS", "ode": "ODEFlow"}
RESULT_NAMES = ("converged", "max_steps", "stalled", "diverged", "max_time")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts XLA backend compilations, to check that timed calls compile nothing."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event == COMPILE_EVENT:
            self.count += 1


def build(cfg: dict, activation: str, key):
    """Model and one batch (x ~ N(0, 1), y one-hot of uniform labels), float64. The same
    key gives the same weights for either activation."""
    k_model, k_x, k_y = jax.random.split(key, 3)
    model = pcscale.nn.residual_mlp(
        cfg["input_dim"], cfg["width"], OUTPUT_DIM, cfg["depth"], parameterisation=pcscale.MuPC(),
        activation=activation, dtype=jnp.float64, key=k_model,
    )
    x = jax.random.normal(k_x, (cfg["batch"], cfg["input_dim"]), jnp.float64)
    labels = jax.random.randint(k_y, (cfg["batch"],), 0, OUTPUT_DIM)
    return model, x, jax.nn.one_hot(labels, OUTPUT_DIM, dtype=jnp.float64)


def make_solvers(cfg: dict) -> dict:
    """Every solver object is built once, so repeated calls hit the same compiled program."""
    depth = pcscale.DepthPreconditioner()
    return {
        "pcg": pcscale.ConjugateGradient(rtol=RTOL, preconditioner=depth),
        "pnewton": pcscale.NewtonKrylov(rtol=RTOL, preconditioner=depth),
        "cg": pcscale.ConjugateGradient(rtol=RTOL),
        "newton": pcscale.NewtonKrylov(rtol=RTOL),
        "nesterov": pcscale.Nesterov(step_size=NESTEROV_STEP, rtol=RTOL),
        "lbfgs": pcscale.LBFGS(rtol=RTOL),
        "ode": pcscale.ODEFlow(rtol=RTOL, max_steps=cfg["ode_budget"]),
    }


def result_name(result) -> str:
    return next(name for name in RESULT_NAMES if bool(result == getattr(pcscale.RESULTS, name)))


def train(model, x, y, steps: int) -> tuple:
    """`steps` PC training steps on the one batch, inference by NewtonKrylov(rtol=1e-6)."""
    optimiser = pcscale.make_optimiser(model, pcscale.Adam(LEARNING_RATE))
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    solver = pcscale.NewtonKrylov(rtol=RTOL)
    history = []
    for _ in range(steps):
        model, opt_state, metrics = pcscale.pc_step(model, opt_state, x, y, optimiser=optimiser,
                                                    solver=solver)
        stats = metrics.inference
        history.append({
            "loss_before_update": float(metrics.loss), "energy": float(metrics.energy),
            "updated": bool(metrics.updated), "inference_result": result_name(stats.result),
            "inference_steps": int(stats.steps), "inference_evaluations": int(stats.evaluations),
            "inference_relative_residual": float(stats.relative_residual),
        })
    return model, history


def run_gd(model, x, y, budget: int, chunk: int) -> dict:
    """Gradient descent from the feedforward state in chunks of `chunk` steps, each
    warm-started from the last. The tolerance is absolute, 1e-6 × the feedforward
    residual, so that a chunk stops at the exact step where the overall relative
    residual reaches 1e-6 (a chunk's own `rtol` would be relative to its start)."""
    z = model.init_activities(x)
    probe = pcscale.GradientDescent(step_size=BETA, rtol=0.0, atol=0.0, max_steps=0)
    # Compiles the chunk program (the budget and tolerances are traced) and reads the
    # residual at the feedforward state.
    initial = jax.block_until_ready(pcscale.infer(model, x, y, z0=z, solver=probe))
    r0 = float(initial.initial_residual)
    solver = pcscale.GradientDescent(step_size=BETA, rtol=0.0, atol=RTOL * r0, max_steps=chunk)
    steps, result, chunks = 0, "max_steps", []
    curve = [{"steps": 0, "relative_residual": 1.0}]
    while steps < budget:
        this = solver if budget - steps >= chunk else dataclasses.replace(solver, max_steps=budget - steps)
        start = time.perf_counter()
        solution = jax.block_until_ready(pcscale.infer(model, x, y, z0=z, solver=this))
        seconds = time.perf_counter() - start
        taken = int(solution.steps)
        steps += taken
        chunks.append({"steps": taken, "seconds": seconds})
        curve.append({"steps": steps, "relative_residual": float(solution.residual) / r0,
                      "energy": float(solution.energy)})
        z = solution.activities
        result = result_name(solution.result)
        if result != "max_steps":  # converged (or diverged): stop
            break
    full = [c["seconds"] / c["steps"] for c in chunks if c["steps"] == chunk]
    per_step = statistics.median(full) if full else sum(c["seconds"] for c in chunks) / max(steps, 1)
    record = {
        "step_size": BETA, "budget": budget, "chunk": chunk, "initial_residual": r0, "result": result,
        "steps": steps, "grad_evals": steps + 1, "relative_residual": curve[-1]["relative_residual"],
        "seconds_per_step": per_step, "chunks": chunks, "curve": curve,
        "wall_clock_s": per_step * steps,
    }
    if result == "converged":
        record.update(basis="exact", steps_estimate=steps, evaluations_estimate=steps + 1,
                      wall_clock_estimate_s=per_step * steps)
        return record
    if result == "diverged":  # no count to compare with
        record.update(basis="diverged", steps_estimate=None, evaluations_estimate=None,
                      wall_clock_estimate_s=None)
        return record
    rho, estimate = extrapolate(curve)
    record.update(contraction_per_step_last_chunk=rho, steps_extrapolated=estimate)
    if estimate is None:  # no contraction over the last chunk: only the lower bound stands
        record.update(basis="lower_bound", steps_estimate=steps, evaluations_estimate=steps + 1,
                      wall_clock_estimate_s=per_step * steps)
    else:
        record.update(basis="extrapolated", steps_estimate=estimate, evaluations_estimate=estimate + 1,
                      wall_clock_estimate_s=per_step * estimate)
    return record


def extrapolate(curve: list) -> tuple:
    """Contraction per step over the last chunk, and the step count at which it would
    bring the relative residual to RTOL; (None, None) if the last chunk did not contract."""
    if len(curve) < 2:
        return None, None
    before, last = curve[-2], curve[-1]
    n = last["steps"] - before["steps"]
    r_before, r_last = before["relative_residual"], last["relative_residual"]
    if n <= 0 or not (0 < r_last < r_before) or r_last <= RTOL:
        return None, None
    rho = (r_last / r_before) ** (1.0 / n)
    return rho, last["steps"] + math.log(r_last / RTOL) / -math.log(rho)


def run_solver(name: str, solver, model, x, y, repeats: int, compiles: CompileCounter) -> dict:
    # Warm-up: the same program with a one-step budget, so the compile costs one step
    # of work instead of a whole solve.
    jax.block_until_ready(pcscale.infer(model, x, y, solver=dataclasses.replace(solver, max_steps=1)))
    last = {}

    def call():
        last["solution"] = pcscale.infer(model, x, y, solver=solver)
        return last["solution"]

    before = compiles.count
    timing = time_calls({name: call}, repeats, warmup=0)[name]
    compiled = compiles.count - before  # before reading the results, which may compile eager ops
    solution = last["solution"]
    grads, hvps = int(solution.grad_evals), int(solution.hvp_evals)
    return {
        "solver": SOLVER_NAMES[name], "settings": repr(solver), "result": result_name(solution.result),
        "steps": int(solution.steps), "grad_evals": grads, "hvp_evals": hvps, "evaluations": grads + hvps,
        "gradient_equivalents": grads + 2 * hvps, "relative_residual": float(solution.relative_residual),
        "energy": float(solution.energy), "wall_clock_s": timing, "repeats": repeats,
        "compilations_during_timed_calls": compiled,
    }


def add_ratios(gd: dict, solvers: dict) -> None:
    """GD's cost over each solver's: from GD's best estimate (exact or extrapolated),
    and from the measured lower bound (the budget). Only for solvers that converged."""
    for record in solvers.values():
        ok = record["result"] == "converged" and gd["basis"] != "diverged"
        seconds = record["wall_clock_s"]["median"]
        record["ratios"] = {
            "gd_evaluations_over_solver": gd["evaluations_estimate"] / record["evaluations"] if ok else None,
            "gd_evaluations_over_solver_lower_bound": gd["grad_evals"] / record["evaluations"] if ok else None,
            "gd_wall_clock_over_solver": gd["wall_clock_estimate_s"] / seconds if ok else None,
            "gd_wall_clock_over_solver_lower_bound": gd["wall_clock_s"] / seconds if ok else None,
        }


def verdict(solvers: dict, names, key: str, minimum: float) -> dict:
    """The best converged solver among `names` by ratio `key`, against `minimum`."""
    ratios = {n: solvers[n]["ratios"][key] for n in names
              if n in solvers and solvers[n]["ratios"][key] is not None}
    if not ratios:
        return {"min_ratio": minimum, "solver": None, "ratio": None, "ratio_lower_bound": None, "pass": False,
                "note": "no ratio: no eligible solver was run or converged, or GD diverged"}
    best = max(ratios, key=ratios.get)
    return {"min_ratio": minimum, "solver": best, "ratio": ratios[best],
            "ratio_lower_bound": solvers[best]["ratios"][key + "_lower_bound"],
            "pass": ratios[best] >= minimum,
            "pass_on_lower_bound": solvers[best]["ratios"][key + "_lower_bound"] >= minimum}


def run_case(case: str, cfg: dict, names: list, repeats: int, key, compiles: CompileCounter) -> dict:
    activation = "linear" if case == "linear" else "tanh"
    model, x, y = build(cfg, activation, key)
    record = {"activation": activation}
    if case == "trained":
        model, record["training"] = train(model, x, y, TRAIN_STEPS)
        record["state"] = (f"after {TRAIN_STEPS} pc_step updates (Adam {LEARNING_RATE}, "
                           f"NewtonKrylov(rtol={RTOL}))")
    else:
        record["state"] = "initialisation"
    record["feedforward_loss"] = float(model.loss(x, y))
    record["gd"] = run_gd(model, x, y, cfg["gd_budget"], cfg["chunk"])
    all_solvers = make_solvers(cfg)
    solvers = {}
    for name in names:
        # One timed call for ODEFlow, which runs out its budget: long enough that timer
        # noise does not matter.
        calls = 1 if name == "ode" else repeats
        solvers[name] = run_solver(name, all_solvers[name], model, x, y, calls, compiles)
    add_ratios(record["gd"], solvers)
    record["solvers"] = solvers
    if case == "linear":
        exact = float(pcscale.theory.equilibrium_energy(model, x, y))
        record["closed_form_energy"] = exact
        for r in solvers.values():
            r["energy_relative_error_vs_closed_form"] = abs(r["energy"] / exact - 1)
        record["targets"] = {"cg_evaluations": verdict(solvers, ["pcg", "cg"], "gd_evaluations_over_solver",
                                                       TARGETS["linear_cg_evaluations"])}
    else:
        record["targets"] = {
            "best_evaluations": verdict(solvers, names, "gd_evaluations_over_solver",
                                        TARGETS["nonlinear_evaluations"]),
            "best_wall_clock": verdict(solvers, names, "gd_wall_clock_over_solver",
                                       TARGETS["nonlinear_wall_clock"]),
        }
    return record


def ratio_text(ratio, lower) -> str:
    if ratio is None:
        return "—"
    if lower is None or math.isclose(ratio, lower):
        return f"{ratio:.1f}×"
    return f"{ratio:.1f}× (≥{lower:.1f}×)"


def print_case(case: str, cfg: dict, record: dict) -> None:
    gd = record["gd"]
    print(f"\ncase {case}: residual_mlp, μPC, {record['activation']}, {cfg['input_dim']} → {cfg['width']} × "
          f"{cfg['depth']} layers → {OUTPUT_DIM}, B = {cfg['batch']}, float64, {record['state']}; "
          f"target relative residual {RTOL:g}")
    if case == "trained":
        losses = [s["loss_before_update"] for s in record["training"]]
        print(f"  training: loss {losses[0]:.4g} → {record['feedforward_loss']:.4g} after {len(losses)} steps; "
              f"inference results {sorted({s['inference_result'] for s in record['training']})}")
    header = (f"  {'solver':<25}{'result':<11}{'steps':>9}{'grads':>9}{'HVPs':>8}{'evals':>9}{'g+2h':>9}"
              f"{'wall s':>10}   {'GD evals / evals':<22}{'GD wall / wall':<22}")
    print(header)
    print(f"  {'GradientDescent':<25}{gd['result']:<11}{gd['steps']:>9}{gd['grad_evals']:>9}{0:>8}"
          f"{gd['grad_evals']:>9}{gd['grad_evals']:>9}{gd['wall_clock_s']:>10.3f}")
    for name, r in record["solvers"].items():
        q = r["ratios"]
        print(f"  {r['solver']:<25}{r['result']:<11}{r['steps']:>9}{r['grad_evals']:>9}{r['hvp_evals']:>8}"
              f"{r['evaluations']:>9}{r['gradient_equivalents']:>9}{r['wall_clock_s']['median']:>10.3f}   "
              f"{ratio_text(q['gd_evaluations_over_solver'], q['gd_evaluations_over_solver_lower_bound']):<22}"
              f"{ratio_text(q['gd_wall_clock_over_solver'], q['gd_wall_clock_over_solver_lower_bound']):<22}")
    ms = gd["seconds_per_step"] * 1e3
    if gd["basis"] == "exact":
        print(f"  GD reached {RTOL:g} in {gd['steps']} steps ({ms:.3f} ms/step).")
    elif gd["basis"] == "diverged":
        print(f"  GD diverged after {gd['steps']} steps: no ratios.")
    else:
        print(f"  GD did not converge within {gd['budget']} steps (relative residual "
              f"{gd['relative_residual']:.3g}; {ms:.3f} ms/step).")
        if gd["basis"] == "extrapolated":
            rho = gd["contraction_per_step_last_chunk"]
            print(f"  Extrapolated from the last chunk (ρ = {rho:.8f} per step): ≈ {gd['steps_estimate']:.0f} "
                  f"steps, ≈ {gd['wall_clock_estimate_s']:.1f} s, an underestimate; ratios use it, (≥ …) the "
                  "measured lower bound.")
        else:
            print("  The last chunk did not contract, so nothing is extrapolated: ratios use the lower "
                  "bound.")
    if case == "linear":
        errors = {r["solver"]: f"{r['energy_relative_error_vs_closed_form']:.1e}"
                  for r in record["solvers"].values()}
        print(f"  energy vs closed form F* (relative error): {errors}")
    for label, t in record["targets"].items():
        if t["solver"] is None:
            print(f"  target {label} ≥ {t['min_ratio']:g}×: MISS ({t['note']})")
            continue
        lower = t["ratio_lower_bound"]
        bound = "" if lower is None or math.isclose(lower, t["ratio"]) else f", lower bound {lower:.1f}×"
        print(f"  target {label} ≥ {t['min_ratio']:g}×: {'PASS' if t['pass'] else 'MISS'} "
              f"({SOLVER_NAMES[t['solver']]}, {t['ratio']:.1f}×{bound})")
    compiled = {r["solver"]: r["compilations_during_timed_calls"] for r in record["solvers"].values()}
    if any(compiled.values()):
        print(f"  WARNING: compilations during timed calls: {compiled}")


def comma_list(choices):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return list(dict.fromkeys(items))

    return parse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, help="JSON path (default benchmarks/results/inference-<platform>.json; "
                                 "--quick writes inference-<platform>-quick.json)")
    add("--quick", action="store_true",
        help="tiny sizes for a smoke test (width 32, depth 8, batch 8, input 20, GD budget 2000 in chunks "
             "of 200, ODEFlow budget 200)")
    add("--width", type=int, help=f"hidden width N (default {FULL['width']})")
    add("--depth", type=int, help=f"weight layers L (default {FULL['depth']})")
    add("--batch", type=int, help=f"batch size B (default {FULL['batch']})")
    add("--input-dim", type=int, help=f"input dimension (default {FULL['input_dim']})")
    add("--gd-budget", type=int, help=f"gradient-descent step budget (default {FULL['gd_budget']})")
    add("--chunk", type=int, help=f"gradient-descent steps per chunk (default {FULL['chunk']})")
    add("--ode-budget", type=int, help=f"ODEFlow step budget (default {FULL['ode_budget']})")
    add("--solvers", type=comma_list(list(SOLVER_NAMES)), default=list(SOLVER_NAMES),
        help="solvers for the tanh cases (default cg,newton,nesterov,lbfgs,ode)")
    add("--linear-solvers", type=comma_list(list(SOLVER_NAMES)), default=["pcg", "cg", "newton"],
        help="solvers for the linear case (default cg,newton)")
    add("--cases", type=comma_list(list(CASES)), default=list(CASES), help="default init,trained,linear")
    add("--repeats", type=int, default=3, help="timed calls per solver (default 3; ODEFlow: 1)")
    add("--seed", type=int, default=0, help="PRNG seed for weights and data (default 0)")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for name in cfg:
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if any(cfg[name] < 1 for name in cfg) or args.repeats < 1:
        parser.error("sizes, budgets, --chunk and --repeats must be >= 1")
    cfg["chunk"] = min(cfg["chunk"], cfg["gd_budget"])

    env = environment()
    print(f"device: {env['device_kind']} ({env['platform']}), {env['cpu_count']} CPUs, jax {jax.__version__}")
    compiles = CompileCounter()
    # Every case starts from the same weights and batch (the linear case differs only in
    # its activation): one key for all.
    key = jax.random.key(args.seed)
    cases = {}
    for case in args.cases:
        names = args.linear_solvers if case == "linear" else args.solvers
        cases[case] = run_case(case, cfg, names, args.repeats, key, compiles)
        print_case(case, cfg, cases[case])

    targets = {f"{case}_{label}": t for case, record in cases.items()
               for label, t in record["targets"].items()}
    out = args.out or Path(__file__).resolve().parent / "results" / f"inference-{env['platform']}.json"
    if args.quick and args.out is None:
        out = out.with_name(out.stem + "-quick.json")
    write_json(out, {
        "benchmark": "inference", "argv": sys.argv[1:], "seed": args.seed, "quick": args.quick,
        "environment": env,
        "config": cfg | {"output_dim": OUTPUT_DIM, "rtol": RTOL, "dtype": "float64",
                         "builder": "residual_mlp", "parameterisation": "MuPC()",
                         "output_energy": "MSE, one-hot targets",
                         "data": "x ~ N(0,1), y one-hot of uniform labels", "gd_step_size": BETA,
                         "nesterov_step_size": NESTEROV_STEP, "repeats": args.repeats,
                         "train_steps": TRAIN_STEPS, "train_optimiser": f"pcscale.Adam({LEARNING_RATE})",
                         "solvers": args.solvers, "linear_solvers": args.linear_solvers},
        "cases": cases, "targets": targets,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
    })
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
