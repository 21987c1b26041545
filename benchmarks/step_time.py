"""Wall-clock cost of one PC training step against one BP step on the same model.

    python benchmarks/step_time.py [--out PATH] [--repeats N] [--bp-repeats N] [--quick] [--cases a b]

Times `pcscale.bp_step`, `pcscale.pc_step` with 0, T and 2T inference steps, and the
Python-loop PC step common in PC codebases; ratios are against the BP step of the same
run. Also times `bp_step` against a plain jitted optax BP step of the same network written
here (`bp_over_plain`, target <= 1.1), at pcscale's matmul precision and at JAX's default.
Prints a table and writes JSON (see benchmarks/README.md for what is measured).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _common import WARMUP, environment, time_calls, write_json

import pcscale
from pcscale._precise import FULL_PRECISION

# Both cases: MSE on one-hot targets, float32, Adam(1e-3) on the weights, and a fixed
# inference budget (rtol = atol = 0, so the solver runs exactly max_steps steps).
CASES = {
    "a": dict(builder="mlp", parameterisation="SP", activation="tanh", input_dim=784, width=128,
              output_dim=10, depth=8, batch=64, T=20, step_size=0.1, repeats=50, bp_repeats=400,
              target=("pc_T_over_bp", 2.5)),
    "b": dict(builder="residual_mlp", parameterisation="MuPC", activation="tanh", input_dim=784,
              width=512, output_dim=10, depth=16, batch=64, T=100, step_size=0.3, repeats=20, bp_repeats=60,
              target=("marginal_2T_over_bp", 0.45)),
}
PARAMETERISATIONS = {"SP": pcscale.SP, "MuPC": pcscale.MuPC}
BASELINES = ("baseline_jax_jit", "baseline_filter_jit")
LEARNING_RATE = 1e-3
# bp_step against a plain jitted optax step: `plain_pcscale_precision` traces its matrix
# products at pcscale's precision (FULL_PRECISION, the fair baseline), `plain_default` at
# JAX's default (TF32 on recent GPUs; the same on CPUs).
PLAIN = {"plain_pcscale_precision": FULL_PRECISION, "plain_default": None}
BP_TARGET = ("bp_over_plain", 1.1)


def build(cfg: dict, key):
    """Model and one batch (x ~ N(0, 1), y one-hot of uniform labels) from one key."""
    k_model, k_x, k_y = jax.random.split(key, 3)
    model = getattr(pcscale.nn, cfg["builder"])(
        cfg["input_dim"], cfg["width"], cfg["output_dim"], cfg["depth"],
        parameterisation=PARAMETERISATIONS[cfg["parameterisation"]](), activation=cfg["activation"],
        output_energy=pcscale.MSE(), dtype=jnp.float32, key=k_model,
    )
    x = jax.random.normal(k_x, (cfg["batch"], cfg["input_dim"]), jnp.float32)
    labels = jax.random.randint(k_y, (cfg["batch"],), 0, cfg["output_dim"])
    return model, x, jax.nn.one_hot(labels, cfg["output_dim"], dtype=jnp.float32)


def python_loop_step(optimiser, beta: float, steps: int, jit):
    """The common hand-written PC step: T separately dispatched activity updates
    z <- z - beta * grad_z sum_i F_i, then a jitted weight gradient + optimiser update.
    `jit` is `jax.jit` or `eqx.filter_jit`, the two usual choices; they differ in
    per-call dispatch overhead, which a Python loop pays T + 2 times."""

    @jit
    def init_z(model, x):
        return model.init_activities(x)

    @jit
    def activity_update(model, z, x, y):
        grad = jax.grad(lambda z: jnp.sum(jax.vmap(model.energy_one)(z, x, y)))(z)
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


def plain_bp_step(model, optimiser, precision: str | None):
    """The plain BP step a user would write: the weights split from the rest of the model
    once, then one `jax.jit` of the batch-mean loss of the feedforward pass,
    `jax.value_and_grad`, `optimiser.update` and `optax.apply_updates`, traced at matmul
    `precision` (None: JAX's default). No input checks and no guard against a non-finite
    update. Returns `step(params, opt_state, x, y) -> (params, opt_state, loss)` and the
    weights."""
    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, x, y):
        network = eqx.combine(params, static)
        return jnp.mean(jax.vmap(lambda xi, yi: network.output_energy(network.forward_one(xi), yi))(x, y))

    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def traced(*args):
        if precision is None:
            return step(*args)
        with jax.default_matmul_precision(precision):
            return step(*args)

    return jax.jit(traced), params


def max_param_diff(model_a, model_b) -> float:
    leaves = lambda model: jax.tree.leaves(eqx.filter(model, eqx.is_array))  # noqa: E731
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves(model_a), leaves(model_b)))


def ratios_of(t: dict, T: int, baseline: str) -> dict:
    """Ratios to the BP step, from one time per quantity (medians, or minima)."""
    marginal_2T = (t["pc_2T"] - t["pc_T"]) / T  # the headline: every fixed cost cancels
    marginal_0 = (t["pc_T"] - t["pc_0"]) / T
    return {
        "pc_T_over_bp": t["pc_T"] / t["bp"], "pc_0_over_bp": t["pc_0"] / t["bp"],
        "pc_2T_over_bp": t["pc_2T"] / t["bp"],
        "marginal_2T_over_bp": marginal_2T / t["bp"], "marginal_0_over_bp": marginal_0 / t["bp"],
        "speedup_vs_baseline": t[baseline] / t["pc_T"],
        **{f"speedup_vs_{label}": t[label] / t["pc_T"] for label in BASELINES},
    }


def run_case(name: str, cfg: dict, repeats: int, bp_repeats: int, key) -> dict:
    model, x, y = build(cfg, key)
    optimiser = pcscale.make_optimiser(model, pcscale.Adam(LEARNING_RATE))
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    T = cfg["T"]
    budgets = {"pc_0": 0, "pc_T": T, "pc_2T": 2 * T}
    calls = {"bp": partial(pcscale.bp_step, model, opt_state, x, y, optimiser=optimiser)}
    for label, steps in budgets.items():
        gd = pcscale.GradientDescent(step_size=cfg["step_size"], rtol=0.0, atol=0.0, max_steps=steps)
        calls[label] = partial(pcscale.pc_step, model, opt_state, x, y, optimiser=optimiser, solver=gd)
    for label, jit in zip(BASELINES, (jax.jit, eqx.filter_jit)):
        calls[label] = partial(python_loop_step(optimiser, cfg["step_size"], T, jit), model, opt_state, x, y)

    # A fixed budget only means something if the loop really ran all of it (the solver
    # stops early on divergence): record what each pc_step did.
    inference = {}
    for label, steps in budgets.items():
        stats = calls[label]()[2].inference
        result = next(r for r in ("converged", "max_steps", "diverged")
                      if bool(stats.result == getattr(pcscale.RESULTS, r)))
        inference[label] = {"requested": steps, "steps": int(stats.steps), "result": result}
        if int(stats.steps) != steps:
            print(f"WARNING case {name}: {label} ran {int(stats.steps)} of {steps} steps ({result})")
    # The baselines must produce the same update as pc_step (same z trajectory, same
    # Adam step) for the comparison to be like for like.
    reference = calls["pc_T"]()[0]
    agreement = {label: max_param_diff(calls[label]()[0], reference) for label in BASELINES}

    timings = time_calls(calls, repeats)
    med = {label: t["median"] for label, t in timings.items()}

    # bp_step against the plain step, in a block of their own (round-robin, more repeats):
    # the ratio is near 1, so it needs more calls than the PC ratios, and no PC call
    # between them changing what is in the caches.
    plain_calls, agreement_plain = {"bp": calls["bp"]}, {}
    bp_model = calls["bp"]()[0]
    for label, precision in PLAIN.items():
        step, params = plain_bp_step(model, optimiser, precision)
        plain_calls[label] = partial(step, params, opt_state, x, y)
        agreement_plain[label] = max_param_diff(eqx.combine(plain_calls[label]()[0], model), bp_model)
    bp_timings = time_calls(plain_calls, bp_repeats)
    names = {"bp_over_plain": "plain_pcscale_precision", "bp_over_plain_default": "plain_default"}
    bp_ratios = {key: bp_timings["bp"]["median"] / bp_timings[label]["median"] for key, label in names.items()}
    bp_ratios_min = {key: bp_timings["bp"]["min"] / bp_timings[label]["min"] for key, label in names.items()}
    bp_metric, bp_limit = BP_TARGET

    baseline = min(BASELINES, key=med.get)  # the headline speed-up is against the faster one
    ratios = ratios_of(med, T, baseline)
    # The same ratios from each quantity's fastest repeat: on a shared machine, where
    # other load inflates the medians, these show what a quiet machine would give.
    ratios_min = ratios_of({label: t["min"] for label, t in timings.items()}, T, baseline)
    metric, limit = cfg["target"]
    config = {k: v for k, v in cfg.items() if k != "target"} | {
        "repeats": repeats, "bp_repeats": bp_repeats, "warmup": WARMUP, "output_energy": "MSE, one-hot targets", "dtype": "float32",
        "optimiser": f"pcscale.Adam({LEARNING_RATE})", "data": "x ~ N(0,1), y one-hot of uniform labels",
        "solver": f"GradientDescent(step_size={cfg['step_size']}, rtol=0, atol=0, max_steps=budget)",
    }
    return {
        "config": config, "timings_s": timings, "ratios": ratios, "inference": inference,
        "ratios_from_min_times": ratios_min,
        "marginal_step_s": {"from_2T_and_T": (med["pc_2T"] - med["pc_T"]) / T,
                            "from_T_and_0": (med["pc_T"] - med["pc_0"]) / T},
        "baseline_headline": baseline, "baseline_max_abs_param_diff_vs_pc_step": agreement,
        "target": {"metric": metric, "max": limit, "value": ratios[metric], "pass": ratios[metric] <= limit},
        "bp_vs_plain": {
            "plain_step": "jax.jit of jax.value_and_grad of the batch-mean loss, optimiser.update, "
                          "optax.apply_updates (benchmarks/step_time.py: plain_bp_step)",
            "precision": {label: precision or "default" for label, precision in PLAIN.items()},
            "timings_s": bp_timings, "ratios": bp_ratios, "ratios_from_min_times": bp_ratios_min,
            "max_abs_param_diff_vs_bp_step": agreement_plain,
        },
        "bp_target": {"metric": bp_metric, "max": bp_limit, "value": bp_ratios[bp_metric],
                      "pass": bp_ratios[bp_metric] <= bp_limit},
    }


def print_case(name: str, result: dict) -> None:
    cfg, r, target = result["config"], result["ratios"], result["target"]
    med = {label: t["median"] for label, t in result["timings_s"].items()}
    T, marginal = cfg["T"], result["marginal_step_s"]
    print(f"\ncase ({name}): {cfg['builder']}, {cfg['parameterisation']}, {cfg['activation']}, "
          f"{cfg['input_dim']} -> {cfg['width']} x {cfg['depth']} layers -> {cfg['output_dim']}, "
          f"B={cfg['batch']}, T={T}, beta={cfg['step_size']}; median of {cfg['repeats']}")
    rows = [  # (label, seconds, ratio key or None for t_bp itself)
        ("t_bp  (bp_step)", med["bp"], None), ("t_pc(0)", med["pc_0"], "pc_0_over_bp"),
        (f"t_pc(T={T})", med["pc_T"], "pc_T_over_bp"), (f"t_pc(2T={2 * T})", med["pc_2T"], "pc_2T_over_bp"),
        ("marginal step (2T-T)/T", marginal["from_2T_and_T"], "marginal_2T_over_bp"),
        ("marginal step (T-0)/T", marginal["from_T_and_0"], "marginal_0_over_bp"),
        ("python loop, jax.jit", med["baseline_jax_jit"], None),
        ("python loop, eqx.filter_jit", med["baseline_filter_jit"], None),
    ]
    print(f"  {'quantity':<30}{'ms':>11}{'x t_bp':>9}")
    for label, seconds, key in rows:
        ratio = r[key] if key else seconds / med["bp"]
        verdict = f"   target <= {target['max']}: {'PASS' if target['pass'] else 'FAIL'}"
        verdict = verdict if key == target["metric"] else ""
        print(f"  {label:<30}{seconds * 1e3:>11.3f}{ratio:>9.3f}{verdict}")
    print(f"  speed-up t_baseline / t_pc(T): {r['speedup_vs_baseline']:.2f}x vs the faster loop "
          f"({r['speedup_vs_baseline_jax_jit']:.2f}x vs jax.jit, {r['speedup_vs_baseline_filter_jit']:.2f}x "
          "vs eqx.filter_jit)")
    m = result["ratios_from_min_times"]
    print(f"  from the fastest repeats instead: t_pc(T)/t_bp {m['pc_T_over_bp']:.3f}, "
          f"marginal/t_bp {m['marginal_2T_over_bp']:.3f}, speed-up {m['speedup_vs_baseline']:.2f}x")
    bp, bp_target = result["bp_vs_plain"], result["bp_target"]
    bp_med = {label: t["median"] for label, t in bp["timings_s"].items()}
    print(f"  bp_step against a plain jitted optax step (own block, median of {cfg['bp_repeats']}):")
    for label, key in (("plain, pcscale's precision", "bp_over_plain"), ("plain, JAX default", "bp_over_plain_default")):
        plain = "plain_pcscale_precision" if key == "bp_over_plain" else "plain_default"
        verdict = f"   target <= {bp_target['max']}: {'PASS' if bp_target['pass'] else 'FAIL'}"
        print(f"  {label:<30}{bp_med[plain] * 1e3:>11.3f}  t_bp/this {bp['ratios'][key]:.3f} "
              f"(fastest repeats {bp['ratios_from_min_times'][key]:.3f})"
              f"{verdict if key == bp_target['metric'] else ''}")
    print(f"  {'t_bp (same block)':<30}{bp_med['bp'] * 1e3:>11.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, help="JSON path (default benchmarks/results/step_time-<platform>.json)")
    add("--repeats", type=int, help="timed calls per quantity (default 50 for (a), 20 for (b))")
    add("--bp-repeats", type=int, help="timed calls of bp_step and the plain steps (default 400 for (a), 60 for (b))")
    add("--quick", action="store_true", help="5 repeats per quantity (20 for bp_step against the plain step), for smoke tests")
    add("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    add("--seed", type=int, default=0, help="PRNG seed for weights and data (default 0)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.bp_repeats is not None and args.bp_repeats < 1:
        parser.error("--bp-repeats must be >= 1")

    env = environment()
    print(f"device: {env['device_kind']} ({env['platform']}), {env['cpu_count']} CPUs, jax {jax.__version__}")
    results = {}
    for name in args.cases:
        cfg = CASES[name]
        repeats = args.repeats or (5 if args.quick else cfg["repeats"])
        bp_repeats = args.bp_repeats or (20 if args.quick else cfg["bp_repeats"])
        # Each case's key depends only on the seed and the case, not on which cases run.
        key = jax.random.fold_in(jax.random.key(args.seed), list(CASES).index(name))
        results[name] = run_case(name, cfg, repeats, bp_repeats, key)
        print_case(name, results[name])

    out = args.out or Path(__file__).resolve().parent / "results" / f"step_time-{env['platform']}.json"
    write_json(out, {
        "benchmark": "step_time", "argv": sys.argv[1:], "seed": args.seed, "quick": args.quick,
        "environment": env, "cases": results,
        "targets": {name: result["target"] for name, result in results.items()},
        "bp_targets": {name: result["bp_target"] for name, result in results.items()},
        "all_targets_pass": all(result["target"]["pass"] and result["bp_target"]["pass"]
                                for result in results.values()),
    })
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
