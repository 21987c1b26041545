"""The `pcscale` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import sys


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    import pcscale

    parser = argparse.ArgumentParser(prog="pcscale", description="Predictive coding networks at scale.")
    parser.add_argument("--version", action="version", version=f"pcscale {pcscale.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a μPC residual MLP by PC and by BP and print the gradient alignment per layer"
    )
    demo.add_argument("--widths", type=_positive_ints, help="comma-separated widths (default 16,256)")
    demo.add_argument("--depth", type=_positive_int, help="number of weight layers L (default 8)")
    demo.add_argument("--steps", type=_positive_int, help="training steps (default 10)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--solver", default="auto", choices=("auto", "gd", "cg", "newton", "nesterov", "lbfgs", "ode"),
        help="inference solver (default auto: conjugate gradients for linear networks, Newton–Krylov otherwise)",
    )
    demo.add_argument(
        "--quick", action="store_true",
        help="a smoke run (widths 8,64, depth 4, 3 steps); cannot be combined with --widths/--depth/--steps",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .experiments import demo

        sizes = {"widths": args.widths, "depth": args.depth, "steps": args.steps}
        given = {name: value for name, value in sizes.items() if value is not None}
        if args.quick and given:
            parser.error(f"--quick sets the sizes itself; drop {', '.join('--' + n for n in given)} or --quick")
        if args.quick:
            given = {"widths": (8, 64), "depth": 4, "steps": 3}
        config = demo.DemoConfig(seed=args.seed, solver=args.solver, **given)
        results = demo.run(config, progress=not args.no_progress)
        print(demo.format_table(config, results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
