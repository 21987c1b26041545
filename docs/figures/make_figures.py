"""Regenerate the figures of docs/experiments.md from the experiments' quick presets.

Runs `pcscale run NAME --preset quick --out RUNS/NAME` for each experiment, one at a time
(they are CPU-heavy), then copies the figures chosen below from RUNS/NAME/figures into
docs/figures/NAME-FIGURE.png (FIGURE.png where the figure's name starts with NAME), shrunk
to at most 900 px wide and saved as optimised 256-colour PNGs. Needs the `plot` and
`images` extras (matplotlib, Pillow).

    PCSCALE_DATA=/path/to/data python docs/figures/make_figures.py            # all, into a temporary folder
    python docs/figures/make_figures.py --runs /tmp/figs --only toy saddle     # reuse or keep runs there

With `--runs`, an experiment whose figures are already in RUNS/NAME/figures is not run
again (delete that folder to rerun it). Without $PCSCALE_DATA the experiments fall back to
their offline datasets, and the figures differ from the committed ones (which used MNIST
and tiny-shakespeare where the experiments read data).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_WIDTH = 900

# Experiment → the figures of its results folder shown in docs/experiments.md.
FIGURES: dict[str, tuple[str, ...]] = {
    "width-depth-linear": ("cosine-heatmaps", "gap-vs-width"),
    "toy": ("energy-loss-skips",),
    "toy-sp": ("gap-over-training",),
    "gamma0-sweep": ("energy-loss-skips",),
    "saddle": ("energy-loss-skips",),
    "inference-convergence": ("inference-steps", "energy-error"),
    "residual-mlp": ("cosine", "layer-cosine-profile"),
    "resnet-cnn": ("cosine",),
    "transformer": ("cosine", "energy-loss"),
    "coord-check": ("coord-check-mupc", "coord-check-sp"),
}


def shrink(source: Path, target: Path) -> None:
    image = Image.open(source).convert("RGB")
    if image.width > MAX_WIDTH:
        height = round(image.height * MAX_WIDTH / image.width)
        image = image.resize((MAX_WIDTH, height), Image.Resampling.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        target, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="experiments to redo (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(FIGURES)
    with tempfile.TemporaryDirectory() as temporary:
        runs = args.runs or Path(temporary)
        runs.mkdir(parents=True, exist_ok=True)
        for name in names:
            figures = runs / name / "figures"
            wanted = [figures / f"{figure}.png" for figure in FIGURES[name]]
            if not all(path.exists() for path in wanted):
                start = time.perf_counter()
                command = ["pcscale", "run", name, "--preset", "quick", "--out", str(runs / name)]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=True, env=os.environ.copy())
                print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
            for path in wanted:
                if not path.exists():
                    available = sorted(p.stem for p in figures.glob("*.png"))
                    sys.exit(f"{name}: no figure {path.name}; it drew {available}")
                target = HERE / (path.name if path.stem.startswith(name) else f"{name}-{path.name}")
                shrink(path, target)
                print(f"  {target.relative_to(HERE.parent.parent)}: {target.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
