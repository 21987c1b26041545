"""The command line's catalogue: what `pcscale --help`, `pcscale list` and
`pcscale show-config` print, saved as JSON inside the package so that those commands
start without importing JAX or the experiments. `tests/test_cli_startup.py` checks that
the saved file equals what the live registries give; refresh it after changing an
experiment, a preset or a solver name with

    python -m pcscale.experiments._catalogue
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Beside cli.py, which reads it without importing this package (its __init__ imports JAX).
PATH = Path(__file__).resolve().parents[1] / "_catalogue.json"


def build() -> dict[str, Any]:
    """The catalogue from the live registries: solver names, parallel modes, and per
    experiment its description and the `show-config` text of each preset."""
    from pcscale import SOLVERS

    from ._bench_tasks import TASKS
    from ._learners import METHODS
    from ._registry import EXPERIMENTS, describe
    from ._runner import Parallel

    return {
        "solvers": list(SOLVERS),
        "parallel": [mode.value for mode in Parallel],
        "bench_tasks": list(TASKS),
        "bench_methods": list(METHODS),
        "experiments": {
            name: {"description": experiment.description,
                   "presets": {preset: describe(name, preset) for preset in experiment.presets}}
            for name, experiment in EXPERIMENTS.items()
        },
    }


def dumps(catalogue: dict[str, Any]) -> str:
    return json.dumps(catalogue, indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def write(path: Path = PATH) -> Path:
    """Write the catalogue atomically (a temporary file renamed over the old one)."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(dumps(build()), encoding="utf-8")
    temporary.replace(path)
    return path


if __name__ == "__main__":  # pragma: no cover - the refresh command in the docstring
    print(f"wrote {write()}")
