"""The model zoo at scale: coordinate checks of the ResNet (μPC vs SP) and the
transformer (CompleteP vs SP) over widths, and PC-vs-BP gradient alignment at the
equilibrium (λ = 1, the paper's setting) against width.

    python benchmarks/zoo.py                 # CPU-sized sweep
    python benchmarks/zoo.py --large         # accelerator-sized sweep

Writes benchmarks/results/zoo-<platform>.json and the coordinate-check figures
zoo-<model>-<preset>-<platform>.png beside it. Not run by the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json  # noqa: E402

import pcscale as pc  # noqa: E402
from pcscale.experiments import save_coord_check  # noqa: E402
from pcscale.theory import coord_check, spread  # noqa: E402

F64 = jnp.float64
SOLVER = pc.NewtonKrylov(rtol=1e-6, max_steps=200)


def _cnn(parameterisation, image):
    return lambda width, key: pc.nn.resnet(3, width, 10, image_size=image, parameterisation=parameterisation,
                                           dtype=F64, key=key)


def _lm(parameterisation, vocab, seq):
    return lambda width, key: pc.nn.transformer(vocab, width, 2, 2, max_len=seq, parameterisation=parameterisation,
                                                dtype=F64, key=key)


def _summary(result, steps):
    activation = np.asarray(spread(result.activation))
    update = np.asarray(spread(result.update))
    return {
        "sizes": list(result.sizes),
        "converged": list(result.converged),
        "activation_spread_t0": float(np.nanmax(activation[0])),
        f"activation_spread_t{steps}": float(np.nanmax(activation[steps])),
        "update_spread_step0": float(np.nanmax(update[0])),
        f"update_spread_step{steps - 1}": float(np.nanmax(update[steps - 1])),
        "update_rms_step0_per_size": [np.asarray(u[0]).tolist() for u in result.update],
    }


def _alignment(make, sizes, x, y, key):
    rows = []
    for size in sizes:
        model = make(size, key=key)
        start = time.perf_counter()
        comparison = pc.compare_at_equilibrium(model, x, y, solver=SOLVER)
        jax.block_until_ready(comparison.alignment.cosine)
        rows.append({
            "size": size,
            "cosine": float(comparison.alignment.cosine),
            "energy_loss_ratio": float(comparison.energy_loss_ratio),
            "relative_residual": float(comparison.inference.relative_residual),
            "converged": bool(comparison.inference.result == pc.RESULTS.converged),
            "seconds": time.perf_counter() - start,
        })
        print(f"  alignment size {size}: cos {rows[-1]['cosine']:.4f}, F/L {rows[-1]['energy_loss_ratio']:.4f}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="accelerator-sized widths")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="subset of resnet-mupc resnet-sp transformer-completep transformer-sp")
    parser.add_argument("--tiny", action="store_true", help="smoke test: two small sizes, one seed")
    args = parser.parse_args()
    env = environment()
    platform = env["platform"]
    steps = 3
    if args.tiny:
        cnn_sizes, lm_sizes, image, batch, seeds = [2, 4], [8, 16], 8, 4, 1
    elif args.large:
        cnn_sizes, lm_sizes, image, batch, seeds = [8, 16, 32, 64], [64, 128, 256, 512], 32, 16, 2
    else:
        cnn_sizes, lm_sizes, image, batch, seeds = [4, 8, 16, 32], [32, 64, 128, 256], 8, 8, 2
    vocab, seq = 65, 16
    key = jax.random.key(0)
    images = jax.random.normal(jax.random.key(1), (batch, 3, image, image), F64)
    labels = jax.nn.one_hot(jnp.arange(batch) % 10, 10, dtype=F64)
    tokens = jax.random.randint(jax.random.key(2), (batch, seq), 0, vocab)
    targets = jax.nn.one_hot(jax.random.randint(jax.random.key(3), (batch, seq), 0, vocab), vocab, dtype=F64)
    cases = [
        ("resnet", "mupc", _cnn(pc.MuPC(adam_rule=pc.AdamRule.RESNET_REFERENCE), image), cnn_sizes, images, labels),
        ("resnet", "sp", _cnn(pc.SP(), image), cnn_sizes, images, labels),
        ("transformer", "completep", _lm(pc.CompleteP(), vocab, seq), lm_sizes, tokens, targets),
        ("transformer", "sp", _lm(pc.SP(alpha=1.0), vocab, seq), lm_sizes, tokens, targets),
    ]
    results = {"environment": env, "settings": {
        "steps": steps, "seeds": seeds, "optimiser": "Adam(1e-2)", "solver": "NewtonKrylov(rtol=1e-6)",
        "dtype": "float64", "image": image, "batch": batch, "vocab": vocab, "seq": seq}, "cases": {}}
    for model_name, preset, make, sizes, x, y in cases:
        label = f"{model_name}-{preset}"
        if args.cases is not None and label not in args.cases:
            continue
        print(f"{label}: coordinate check over {sizes}", flush=True)
        start = time.perf_counter()
        result = coord_check(make, sizes, x, y, optimiser=pc.Adam(1e-2), solver=SOLVER, steps=steps, seeds=seeds,
                             key=key)
        seconds = time.perf_counter() - start
        save_coord_check(result, args.out / f"zoo-{label}-{platform}.json")
        try:
            import pcscale.plots

            pcscale.plots.coord_check(result, path=args.out / f"zoo-{label}-{platform}.png")
        except ImportError:
            pass
        entry = _summary(result, steps)
        entry["coord_check_seconds"] = seconds
        print(f"  spreads: activation {entry['activation_spread_t0']:.2f}, update {entry['update_spread_step0']:.2f}"
              f" ({seconds:.0f} s)", flush=True)
        entry["alignment"] = _alignment(make, sizes, x, y, key)
        results["cases"][label] = entry
        # Rewritten after every case, so an interrupted run keeps what it finished.
        write_json(args.out / f"zoo-{platform}.json", results)


if __name__ == "__main__":
    main()
