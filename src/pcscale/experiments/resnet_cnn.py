"""`resnet-cnn` — Figure 4b: the 3-stage residual CNN of docs/background.md §3.3 under μPC
(per-group Adam rates), PC against BP across channel widths (docs/background.md §5.8)."""

from __future__ import annotations

import dataclasses
from typing import cast

import jax
import numpy as np

import pcscale as pc

from . import _names, _nonlinear
from ._config import check_config, check_positive, field
from ._lockstep import optimiser_for, train_lockstep
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._shared import ImageTrainingFields


@dataclasses.dataclass(frozen=True)
class ResNetCNNConfig(ImageTrainingFields):
    """Settings of `resnet-cnn` (`pcscale show-config resnet-cnn` lists each with its
    meaning). The paper reads B of the first 1000 ImageNet training images at 224×224;
    quick reads MNIST zero-padded to 32×32, or the 8×8 digits offline (sides that are
    not multiples of 8 are padded). "mupc" uses the paper's per-group Adam rates
    (docs/background.md §3.3).

    Both presets infer with "auto" (Newton–Krylov with the Gauss–Newton preconditioner) to
    rtol = 1e-6, at most 100 Newton steps, which certifies every step of the quick run
    (the paper's size is not measured yet). That tolerance lies below the float32 rounding
    floor of this network (the readout's 1/fan-in multiplier makes the starting residual
    small: `pcscale.residual_floor` puts the floor at about 2e-4 of it at C = 2 and 2e-3
    at C = 8 on 32×32 inputs), so "auto"
    certifies in float64 through `pcscale.MixedPrecision`. The reference protocol, GD
    with β = 0.3 for at most 200 steps, does not reach rtol = 1e-4 (on the quick batch
    the relative residual is still about 4e-2 after 100 steps): it is the fidelity
    option, and its residuals are reported."""

    steps: int = 5
    widths: tuple[int, ...] = field((2, 8), "C: the channel widths swept, one cell each (the paper labels them "
                                            "N = 9C)")
    n_res: int = field(3, "residual blocks (3: one per stage)")
    iteration_sweep: tuple[int, ...] = field((10, 30, 100), "numbers of GD inference steps (β = step_size) "
                                                            "after which the cosine at θ_0 is also measured, "
                                                            "whatever solver trains the cells")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "widths", "n_res", "gamma0", "learning_rate", "steps", "iteration_sweep")
        _nonlinear.check_inference(self)


QUICK = ResNetCNNConfig()
# Certified inference (auto, rtol 1e-6) as in quick; the reference's fixed GD budget is
# `--set solver=gd --set rtol=0 --set max_inference_steps=200`.
PAPER = ResNetCNNConfig(dataset="imagenet", fallback=False, batch=128, widths=(2, 8, 16, 32),
                        iteration_sweep=(10, 25, 50, 100, 200, 400), steps=100)


def cells(config: ResNetCNNConfig) -> list[Cell]:
    return [Cell(f"C{c}-seed{seed}", {"width": c, "seed": seed}) for c in config.widths for seed in config.seeds]


def tracked_layers(model) -> tuple[list[int], list[str]]:
    """The stage convs and the readout ([R]'s Conv1–3 and Readout): the non-residual
    layers that carry weights (pools carry none, block convs are residual)."""
    layers = [i for i in _nonlinear.layers_with_weights(model) if not model.layers[i].skip]
    labels = [f"Conv{k + 1}" for k in range(len(layers) - 1)] + ["Readout"]
    return layers, labels


def _parameterisation(config: ResNetCNNConfig):
    if config.parameterisation in _names.MU_FAMILY:
        base = _names.parameterisation(config.parameterisation, gamma0=config.gamma0)
        return dataclasses.replace(base, adam_rule=pc.AdamRule.RESNET_REFERENCE)
    return _names.parameterisation(config.parameterisation, gamma0=config.gamma0)


def run_cell(config: ResNetCNNConfig, cell: Cell, context: CellContext) -> CellResult:
    c, seed = cell.settings["width"], cell.settings["seed"]
    x, y, data_info = _names.image_batch(config.dataset, batch=config.batch, seed=seed, flatten=False,
                                         data_root=config.data_root, fallback=config.fallback, multiple_of=8)
    dtype = _names.dtype(config.float64)
    x, y = x.astype(dtype), y.astype(dtype)
    _, model_key = jax.random.split(jax.random.PRNGKey(seed))
    image_size = cast(tuple[int, int], tuple(x.shape[2:]))  # (H, W) of the (N, C, H, W) batch
    model = pc.nn.resnet(x.shape[1], c, y.shape[1], image_size=image_size, n_res=config.n_res,
                         activation=config.activation, parameterisation=_parameterisation(config),
                         output_energy=pc.CrossEntropy(), dtype=dtype, key=model_key)
    optimiser = optimiser_for(model, pc.Adam(config.learning_rate))
    solver = _nonlinear.solver_for(config, model, x, y, progress=context.progress)
    if context.mesh is not None:  # the budget sweep runs data parallel too
        x, y = pc.shard_batch((x, y), context.mesh)
    sweep = [_cosine_at_budget(model, x, y, config, budget) for budget in config.iteration_sweep]
    trace = train_lockstep(model, x, y, optimiser=optimiser, inference=solver, steps=config.steps,
                           progress=context.progress, mesh=context.mesh, description=cell.name)
    layers, labels = tracked_layers(model)
    info = {**data_info, "depth_effective": config.n_res + 4, "solver": type(solver).__name__,
            "tracked_layers": layers, "layer_labels": labels, "plot_width": 9 * c,
            "iteration_sweep": list(config.iteration_sweep), "cosine_vs_iterations": np.asarray(sweep)}
    return CellResult(cell, trace, info, 0.0)


def _cosine_at_budget(model, x, y, config: ResNetCNNConfig, budget: int) -> float:
    """The PC–BP cosine at θ_0 after exactly `budget` GD inference steps with
    β = `step_size` (the paper's plot; whatever `solver` trains the cell)."""
    solver = pc.GradientDescent(step_size=config.step_size, rtol=0.0, max_steps=budget)
    comparison = pc.compare_at_equilibrium(model, x, y, solver=solver)
    cosine = jax.device_get(comparison.alignment.cosine)
    return float(cosine) if bool(comparison.alignment.defined) else float("nan")


def summarise(config: ResNetCNNConfig, results: list[CellResult]) -> str:
    title = (f"resnet-cnn: 3-stage ResNet, n_res = {config.n_res}, {config.activation}, {config.parameterisation}, "
             f"B = {config.batch}, Adam η = {config.learning_rate:g}")
    return _nonlinear.summarise(title, config, results, label=lambda r: f"C = {r.cell.settings['width']}",
                                symbol="C", section="§5.8")


EXPERIMENT = Experiment(
    name="resnet-cnn",
    description="Figure 4b: 3-stage residual CNNs under μPC, PC against BP across channel widths",
    config_type=ResNetCNNConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._training:plot_training",),
)
