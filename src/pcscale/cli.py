"""The `pcscale` command line: argument parsing and dispatch only.

`pcscale --help`, `pcscale list` and `pcscale show-config` read the names and texts they
print from `_catalogue.json` beside this file (written by `pcscale.experiments._catalogue`
and checked against the live registries by the tests), so they start without importing
JAX; the other commands import what they run.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import re
import sys
from importlib import resources
from typing import Any


@functools.cache
def _catalogue() -> dict[str, Any]:
    try:
        return json.loads(resources.files("pcscale").joinpath("_catalogue.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or unreadable: ask the registries (imports JAX)
        from .experiments._catalogue import build

        return build()


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


def _devices(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive number of devices or 'all', got {text!r}") from None


def _join_hosts(args, parser) -> None:
    """`jax.distributed.initialize` from --distributed and its three options."""
    given = {"coordinator_address": args.coordinator, "num_processes": args.num_processes,
             "process_id": args.process_id}
    if not args.distributed:
        if any(value is not None for value in given.values()):
            parser.exit(2, "pcscale run: error: --coordinator, --num-processes and --process-id need --distributed\n")
        return
    import jax

    try:
        jax.distributed.initialize(**{key: value for key, value in given.items() if value is not None})
    except (RuntimeError, ValueError) as error:
        parser.exit(2, f"pcscale run: error: could not join the multi-host run ({error}); give --coordinator "
                       "HOST:PORT, --num-processes and --process-id, or run under Slurm or Open MPI.\n")


EXIT_CODES = """exit status: 0 success; 1 a run finished but training failed in some cell (a
non-finite or diverging loss, a refused update: listed under FAILED); 2 bad input, a
config or data error, a file-system error, or a results folder in use by another run;
130 interrupted (finished cells are saved)."""


def _parser() -> argparse.ArgumentParser:
    import pcscale

    parser = argparse.ArgumentParser(prog="pcscale", description="Predictive coding networks at scale.",
                                     epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"pcscale {pcscale.__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of an error instead of a one-line message")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the command too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error instead of a one-line message")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a μPC residual MLP by PC and by BP and print the gradient alignment per layer",
        parents=[debug], epilog=EXIT_CODES,
    )
    demo.add_argument("--widths", type=_positive_ints, help="comma-separated widths (default 16,256)")
    demo.add_argument("--depth", type=_positive_int, help="number of weight layers L (default 8)")
    demo.add_argument("--steps", type=_positive_int, help="training steps (default 10)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--solver", default="auto", choices=tuple(_catalogue()["solvers"]),
        help="inference solver (default auto: conjugate gradients for linear networks, Newton–Krylov otherwise)",
    )
    demo.add_argument(
        "--quick", action="store_true",
        help="a smoke run (widths 8,64, depth 4, 3 steps); cannot be combined with --widths/--depth/--steps",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = commands.add_parser(
        "run", help="run an experiment of the paper (pcscale list) into a results folder, print its table and plot it",
        parents=[debug], epilog=EXIT_CODES,
    )
    run.add_argument("experiment", help="experiment name, e.g. width-depth-linear (see pcscale list)")
    run.add_argument("--preset", default="quick", help="quick (minutes on a laptop CPU) or paper (default quick)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set widths=8,64 --set steps=5 (repeatable; "
        "pcscale show-config EXPERIMENT lists the keys)",
    )
    run.add_argument("--out", help="results folder (default runs/EXPERIMENT-PRESET)")
    precision = run.add_mutually_exclusive_group()
    precision.add_argument("--x64", action="store_true", default=None, help="compute in float64")
    precision.add_argument("--x32", dest="x64", action="store_false", help="compute in float32")
    run.add_argument("--force", action="store_true",
                     help="delete results of a different config in --out instead of refusing")
    run.add_argument("--no-plot", action="store_true", help="do not draw the figures")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    scale = run.add_argument_group("devices and hosts (docs/scaling.md)")
    scale.add_argument("--devices", type=_devices, default=1, metavar="N|all",
                       help="how many devices to use: a number, or all (default 1)")
    scale.add_argument("--parallel", choices=_catalogue()["parallel"], default="cells",
                       help="cells: one cell per device, concurrently (default); batch: every cell data parallel "
                            "over all devices (the batch must be divisible by their number)")
    scale.add_argument("--distributed", action="store_true",
                       help="join a multi-host run (jax.distributed.initialize) before anything else; with "
                            "Slurm, Open MPI or Cloud TPU the three options below are detected")
    scale.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (with --distributed)")
    scale.add_argument("--num-processes", type=_positive_int, metavar="N", help="number of processes")
    scale.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 … N-1")

    bench = commands.add_parser(
        "bench", help="the deep-PC benchmark suite: train one task by BP and the PC family, one results folder per "
        "method, and print them side by side", parents=[debug], epilog=EXIT_CODES,
    )
    bench.add_argument("task", choices=_catalogue()["bench_tasks"], help="the task (docs/bench_suite.md)")
    bench.add_argument("--method", dest="methods", action="append", default=[], metavar="METHOD",
                       choices=_catalogue()["bench_methods"],
                       help="a method to run (repeatable; default: every method of the preset): "
                            + ", ".join(_catalogue()["bench_methods"]))
    bench.add_argument("--preset", default="quick", help="quick (minutes on a laptop CPU) or full (one GPU)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (pcscale show-config bench-TASK lists the keys)")
    bench.add_argument("--out", help="the suite folder, one subfolder per method (default runs/bench/TASK-PRESET)")
    bench_precision = bench.add_mutually_exclusive_group()
    bench_precision.add_argument("--x64", action="store_true", default=None, help="compute in float64")
    bench_precision.add_argument("--x32", dest="x64", action="store_false", help="compute in float32")
    bench.add_argument("--force", action="store_true",
                       help="delete results of a different config in a method's folder instead of refusing")
    bench.add_argument("--no-plot", action="store_true", help="do not draw the figures")
    bench.add_argument("--no-progress", action="store_true", help="hide progress")

    plot = commands.add_parser("plot", help="draw the figures of a results folder (PNG, into RUN_DIR/figures)",
                               parents=[debug])
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="folder for the figures (default RUN_DIR/figures)")

    commands.add_parser("list", help="list the experiments with one-line descriptions", parents=[debug])

    show = commands.add_parser("show", help="print the summary table of a results folder", parents=[debug],
                               epilog=EXIT_CODES)
    show.add_argument("run_dir")

    config = commands.add_parser("show-config", help="print an experiment's config keys: each one's value in a "
                                 "preset, type, default, valid names and meaning", parents=[debug])
    config.add_argument("experiment")
    config.add_argument("--preset", default="quick")
    return parser


def _experiment_command(args, parser) -> int:
    listed = _catalogue()["experiments"]
    if args.command == "list":
        width = max(len(name) for name in listed)
        for name, entry in listed.items():
            print(f"{name:<{width}}  {entry['description']}")
        return 0
    if args.command == "show-config":
        text = listed.get(args.experiment, {}).get("presets", {}).get(args.preset)
        if text is None:  # an unknown name or preset: the registry says what exists
            from .experiments._registry import describe

            text = describe(args.experiment, args.preset)
        print(text)
        return 0
    from . import experiments

    if args.command == "show":
        run = experiments.load_run(args.run_dir)
        print(experiments.summary(run))
        return 1 if run.failed else 0
    if args.command == "plot":
        return _plot(args.run_dir, args.out)
    if args.command == "bench":
        return _bench(args)
    _join_hosts(args, parser)
    import jax

    from .experiments._registry import resolve_config
    from .experiments._runner import needs_float64

    # The command line owns its process: 64-bit mode is turned on here, at start-up and
    # before any array exists, for the whole run, summary and figures (a library call
    # scopes it to the run instead).
    if needs_float64(resolve_config(args.experiment, args.preset, overrides=args.overrides, float64=args.x64)):
        jax.config.update("jax_enable_x64", True)
    first = jax.process_index() == 0  # one process of a multi-host run prints and plots
    run = experiments.run(
        args.experiment, args.preset, args.out, overrides=args.overrides, float64=args.x64, force=args.force,
        progress=not args.no_progress and first, devices=args.devices,
        parallel=experiments.Parallel(args.parallel),
    )
    if not first:
        return 1 if run.failed else 0
    return _report(run, "run", plot=not args.no_plot)


def _report(run, command: str, *, plot: bool) -> int:
    """Print a finished run's summary, what was reused, where it lies; draw its figures;
    the exit status (1 if a cell failed)."""
    from . import experiments

    print(experiments.summary(run))
    if run.reused:
        print(f"\n({len(run.reused)} finished cells reused from {run.out_dir}, {len(run.computed)} computed)")
    print(f"\nresults: {run.out_dir}")
    if plot:
        _plot(run.out_dir, None)
    if run.failed:
        print(f"\npcscale {command}: {len(run.failed)} of {len(run.results)} cells failed (see FAILED above); exit "
              "status 1.", file=sys.stderr)
        return 1
    return 0


# What to do about a file-system error, by its errno.
_OS_FIXES = {
    errno.EEXIST: "a file is where a folder should be: choose another --out, or move that file away",
    errno.ENOTDIR: "a file is where a folder should be: choose another --out, or move that file away",
    errno.EISDIR: "a folder is where a file should be: point at the file inside it, or move the folder away",
    errno.EACCES: "you may not read or write there: choose a folder you own (--out), or fix its permissions",
    errno.EPERM: "you may not read or write there: choose a folder you own (--out), or fix its permissions",
    errno.EROFS: "the file system is read-only: choose an --out on a writable disk",
    errno.ENOSPC: "the disk is full: free some space or choose an --out on another disk; every finished cell is "
                  "saved, so the same command resumes",
    errno.EDQUOT: "your disk quota is used up: free some space or choose an --out on another disk; every "
                  "finished cell is saved, so the same command resumes",
    errno.ENOENT: "no such file or folder: check the path",
}


def _message(error: BaseException) -> str:
    """One line for an error: an OS error raised by the file system (errno and path set)
    as its path, cause and fix; pcscale's own errors as they are."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        if error.filename is None:  # pcscale's own (errno, message): the message says it all
            return error.strerror
        path = error.filename if error.filename2 is None else f"{error.filename} → {error.filename2}"
        fix = _OS_FIXES.get(error.errno, "check the path, its permissions and the disk")
        return f"{path}: {error.strerror}; {fix}."
    return str(error)


def _plot(run_dir, out) -> int:
    try:
        from .plots import plot_run

        paths = plot_run(run_dir, out_dir=out)
    except ImportError as error:
        print(f"figures not drawn: {error}", file=sys.stderr)
        return 0
    for path in paths:
        print(f"figure: {path}")
    return 0


def _bench(args) -> int:
    import jax

    from .experiments._bench_suite import experiment_name, run_suite
    from .experiments._registry import resolve_config
    from .experiments._runner import needs_float64

    config = resolve_config(experiment_name(args.task), args.preset, overrides=args.overrides, float64=args.x64)
    if needs_float64(config):
        jax.config.update("jax_enable_x64", True)
    suite = run_suite(args.task, methods=args.methods, preset=args.preset, out=args.out, overrides=args.overrides,
                      float64=args.x64, force=args.force, progress=not args.no_progress)
    return _report(suite, "bench", plot=not args.no_plot)


def _demo(args, parser) -> int:
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
    return 1 if any(result.failure is not None for result in results) else 0


def _runtime_message(error: RuntimeError) -> str | None:
    """One line for a runtime error pcscale can explain: a check inside a compiled
    function (Equinox's runtime errors carry pcscale's message before a long note), or
    the device running out of memory; None for anything else (a genuine crash)."""
    text = str(error)
    found = re.search(r"EquinoxRuntimeError: (.+)", text)
    if found:
        return found.group(1).strip()
    if type(error).__name__ == "EquinoxRuntimeError":
        return text.strip().splitlines()[0]
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return ("the device ran out of memory; use smaller sizes (--set batch=…, widths=…), or spread each cell "
                "over several devices (--devices all --parallel batch); every finished cell is saved")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args, parser)
        return _experiment_command(args, parser)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        from .experiments._folder import FolderInUse  # a RuntimeError: pcscale's own message

        if isinstance(error, RuntimeError) and not isinstance(error, FolderInUse):
            message = _runtime_message(error)
        else:
            message = _message(error)
        if args.debug or message is None:
            raise
        parser.exit(2, f"pcscale {args.command}: error: {message}\n")
    except KeyboardInterrupt:
        saved = "; every finished cell is saved: run the same command again to resume" if args.command == "run" else ""
        parser.exit(130, f"pcscale {args.command}: interrupted{saved}.\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
