"""Wall-clock cost of one PC training step against one BP step on the same model.

    python benchmarks/step_time.py [--out PATH] [--repeats N] [--quick] [--cases a b]

For each case it times (median of repeated calls, after warm-up, each call followed by
`jax.block_until_ready`): `pcscale.bp_step`; `pcscale.pc_step` with a fixed budget of
0, T and 2T inference steps; and a "Python loop" PC step written the way many PC
codebases write it (a jitted per-iteration activity update called T times from Python,
then a jitted weight update). All ratios are against the BP step measured in the same
run. Results go to a table on stdout and to JSON (see README.md).
"""

from __future__ import annotations

import argparse
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
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import pcscale

# Both cases use MSE on one-hot targets, float32, Adam(1e-3) for the weights, and a
# fixed inference budget (rtol = atol = 0, so the solver runs exactly max_steps steps).
CASES = {
    "a": dict(builder="mlp", parameterisation="SP", activation="tanh", input_dim=784, width=128,
              output_dim=10, depth=8, batch=64, T=20, step_size=0.1, repeats=50,
              target=("pc_T_over_bp", 2.5)),
    "b": dict(builder="residual_mlp", parameterisation="MuPC", activation="tanh", input_dim=784,
              width=512, output_dim=10, depth=16, batch=64, T=100, step_size=0.3, repeats=20,
              target=("marginal_2T_over_bp", 0.45)),
}
PARAMETERISATIONS = {"SP": pcscale.SP, "MuPC": pcscale.MuPC}
WARMUP = 3
LEARNING_RATE = 1e-3


def build(cfg: dict, key):
    """Model and one batch (x ~ N(0, 1), y one-hot of uniform labels) from one key."""
    k_model, k_x, k_y = jax.random.split(key, 3)
    builder = getattr(pcscale.nn, cfg["builder"])
    model = builder(
        cfg["input_dim"], cfg["width"], cfg["output_dim"], cfg["depth"],
        parameterisation=PARAMETERISATIONS[cfg["parameterisation"]](),
        activation=cfg["activation"], output_energy=pcscale.MSE(), dtype=jnp.float32, key=k_model,
    )
    x = jax.random.normal(k_x, (cfg["batch"], cfg["input_dim"]), jnp.float32)
    labels = jax.random.randint(k_y, (cfg["batch"],), 0, cfg["output_dim"])
    y = jax.nn.one_hot(labels, cfg["output_dim"], dtype=jnp.float32)
    return model, x, y


def solver(cfg: dict, steps: int) -> pcscale.GradientDescent:
    return pcscale.GradientDescent(step_size=cfg["step_size"], rtol=0.0, atol=0.0, max_steps=steps)


def time_call(fn, repeats: int) -> dict:
    """Median (and spread) of `repeats` timed calls of `fn()` after WARMUP untimed ones.

    Every call starts from the same inputs (no state is chained between calls), so each
    does identical work; the first warm-up call also pays for compilation."""
    for _ in range(WARMUP):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "times": times}


def python_loop_step(optimiser, beta: float, steps: int, jit):
    """The common hand-written PC step: T separately dispatched activity updates
    z <- z - beta * grad_z sum_i F_i, then a jitted weight gradient + optimiser update.
    `jit` is `jax.jit` or `eqx.filter_jit` (the two usual choices; they differ in
    per-call dispatch overhead, which a Python loop pays T + 2 times)."""

    @jit
    def init_z(model, x):
        return model.init_activities(x)

    @jit
    def activity_update(model, z, x, y):
        total = lambda z: jnp.sum(jax.vmap(model._energy_one)(z, x, y))  # noqa: E731
        grad = jax.grad(total)(z)
        return jax.tree.map(lambda z_l, g_l: z_l - beta * g_l, z, grad)

    @jit
    def weight_update(model, opt_state, z, x, y):
        _, grads = pcscale.pc_gradients(model, z, x, y)
        params = eqx.filter(model, eqx.is_array)
        updates, opt_state = optimiser.update(eqx.filter(grads, eqx.is_array), opt_state, params)
        return eqx.apply_updates(model, updates), opt_state

    def step(model, opt_state, x, y):
        z = init_z(model, x)
        for _ in range(steps):
            z = activity_update(model, z, x, y)
        return weight_update(model, opt_state, z, x, y)

    return step


def max_param_diff(model_a, model_b) -> float:
    leaves = zip(jax.tree.leaves(eqx.filter(model_a, eqx.is_array)), jax.tree.leaves(eqx.filter(model_b, eqx.is_array)))
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in leaves)


def run_case(name: str, cfg: dict, repeats: int, key) -> dict:
    model, x, y = build(cfg, key)
    optimiser = pcscale.make_optimiser(model, pcscale.Adam(LEARNING_RATE))
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    T = cfg["T"]
    timings, inference = {}, {}

    timings["bp"] = time_call(lambda: pcscale.bp_step(model, opt_state, x, y, optimiser=optimiser), repeats)
    for label, steps in (("pc_0", 0), ("pc_T", T), ("pc_2T", 2 * T)):
        gd = solver(cfg, steps)
        call = lambda gd=gd: pcscale.pc_step(model, opt_state, x, y, optimiser=optimiser, solver=gd)  # noqa: E731
        timings[label] = time_call(call, repeats)
        # A fixed budget only means something if the loop really ran all of it (the
        # solver stops early on divergence); record what it did.
        stats = call()[2].inference
        inference[label] = {"requested": steps, "steps": int(stats.steps), "result": str(stats.result)}
        if int(stats.steps) != steps:
            print(f"WARNING case {name}: {label} ran {int(stats.steps)} of {steps} steps ({stats.result})")

    # Baselines: also check they compute the same update as pc_step (same z trajectory,
    # same Adam step), so the comparison is like for like.
    reference, _, _ = pcscale.pc_step(model, opt_state, x, y, optimiser=optimiser, solver=solver(cfg, T))
    agreement = {}
    for label, jit in (("baseline_jax_jit", jax.jit), ("baseline_filter_jit", eqx.filter_jit)):
        step = python_loop_step(optimiser, cfg["step_size"], T, jit)
        timings[label] = time_call(lambda step=step: step(model, opt_state, x, y), repeats)
        agreement[label] = max_param_diff(step(model, opt_state, x, y)[0], reference)

    med = {label: t["median"] for label, t in timings.items()}
    baseline = min(("baseline_jax_jit", "baseline_filter_jit"), key=med.get)  # the stronger one
    marginal_0 = (med["pc_T"] - med["pc_0"]) / T
    marginal_2T = (med["pc_2T"] - med["pc_T"]) / T
    ratios = {
        "pc_T_over_bp": med["pc_T"] / med["bp"],
        "pc_0_over_bp": med["pc_0"] / med["bp"],
        "marginal_2T_over_bp": marginal_2T / med["bp"],  # headline marginal cost
        "marginal_0_over_bp": marginal_0 / med["bp"],
        "speedup_vs_baseline": med[baseline] / med["pc_T"],
        "speedup_vs_baseline_jax_jit": med["baseline_jax_jit"] / med["pc_T"],
        "speedup_vs_baseline_filter_jit": med["baseline_filter_jit"] / med["pc_T"],
    }
    metric, threshold = cfg["target"]
    return {
        "config": {k: v for k, v in cfg.items() if k != "target"} | {
            "repeats": repeats, "warmup": WARMUP, "output_energy": "MSE (one-hot targets)",
            "dtype": "float32", "optimiser": f"pcscale.Adam({LEARNING_RATE})",
            "solver": f"GradientDescent(step_size={cfg['step_size']}, rtol=0, atol=0, max_steps=T)",
        },
        "timings_s": timings,
        "marginal_step_s": {"from_2T_and_T": marginal_2T, "from_T_and_0": marginal_0},
        "ratios": ratios,
        "baseline_headline": baseline,
        "baseline_max_abs_param_diff_vs_pc_step": agreement,
        "inference": inference,
        "target": {"metric": metric, "max": threshold, "value": ratios[metric], "pass": ratios[metric] <= threshold},
    }


def print_case(name: str, result: dict) -> None:
    cfg, med = result["config"], {k: v["median"] for k, v in result["timings_s"].items()}
    r, T, bp = result["ratios"], cfg["T"], med["bp"]
    target = result["target"]
    verdict = lambda metric: (  # noqa: E731
        f"  target <= {target['max']}: {'PASS' if target['pass'] else 'FAIL'}" if metric == target["metric"] else ""
    )
    print(f"\ncase ({name}) {cfg['builder']} {cfg['parameterisation']} {cfg['activation']} "
          f"{cfg['input_dim']}->{cfg['width']}x{cfg['depth']}->{cfg['output_dim']}, B={cfg['batch']}, "
          f"T={T}, beta={cfg['step_size']}, median of {cfg['repeats']}")
    rows = [("t_bp (bp_step)", bp, 1.0), ("t_pc(0)", med["pc_0"], r["pc_0_over_bp"]),
            (f"t_pc(T={T})", med["pc_T"], r["pc_T_over_bp"]), (f"t_pc(2T={2 * T})", med["pc_2T"], med["pc_2T"] / bp),
            ("python loop, jax.jit", med["baseline_jax_jit"], med["baseline_jax_jit"] / bp),
            ("python loop, eqx.filter_jit", med["baseline_filter_jit"], med["baseline_filter_jit"] / bp),
            ("marginal step (2T-T)/T", result["marginal_step_s"]["from_2T_and_T"], r["marginal_2T_over_bp"]),
            ("marginal step (T-0)/T", result["marginal_step_s"]["from_T_and_0"], r["marginal_0_over_bp"])]
    metric_of = {f"t_pc(T={T})": "pc_T_over_bp", "marginal step (2T-T)/T": "marginal_2T_over_bp"}
    print(f"  {'quantity':<30}{'time [ms]':>12}{'x t_bp':>10}")
    for label, seconds, ratio in rows:
        print(f"  {label:<30}{seconds * 1e3:>12.3f}{ratio:>10.3f}{verdict(metric_of.get(label))}")
    print(f"  speed-up of pc_step over python loop: {r['speedup_vs_baseline']:.2f}x "
          f"(vs {result['baseline_headline']}; jax.jit {r['speedup_vs_baseline_jax_jit']:.2f}x, "
          f"filter_jit {r['speedup_vs_baseline_filter_jit']:.2f}x)")


def environment() -> dict:
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "equinox": eqx.__version__,
                     "optax": optax.__version__, "numpy": np.__version__, "pcscale": pcscale.__version__},
        "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, payload: dict) -> None:
    """Atomic write: a temp file in the target directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/step_time-<platform>.json)")
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 50 for (a), 20 for (b))")
    parser.add_argument("--quick", action="store_true", help="5 repeats per measurement (smoke test)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")

    env = environment()
    print(f"device: {env['device_kind']} ({env['platform']}), {env['cpu_count']} CPUs, jax {jax.__version__}")
    results = {}
    for name in args.cases:
        cfg = CASES[name]
        repeats = args.repeats or (5 if args.quick else cfg["repeats"])
        # Each case's key depends only on the seed and the case, not on which cases run.
        key = jax.random.fold_in(jax.random.key(args.seed), list(CASES).index(name))
        results[name] = run_case(name, cfg, repeats, key)
        print_case(name, results[name])

    out = args.out or Path(__file__).resolve().parent / "results" / f"step_time-{env['platform']}.json"
    write_json(out, {"benchmark": "step_time", "environment": env, "seed": args.seed, "quick": args.quick,
                     "argv": sys.argv[1:], "cases": results,
                     "all_targets_pass": all(r["target"]["pass"] for r in results.values())})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
