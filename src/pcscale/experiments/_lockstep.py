"""The per-cell training loop of every experiment (docs/background.md §5.0): a PC model and its
BP twin trained side by side from one initial model and one optimiser, with every metric
measured at θ_t before update t and only scalars kept (pitfall 2 of docs/background.md §7).
It is `pcscale.train` on one fixed batch, its history read into a
[`Trace`][pcscale.experiments.Trace]."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh

from .._equilibrium import AbstractInferenceMethod, inference_method
from .._health import ADVICE
from .._linear import check_model
from .._model import PCModel
from .._sharding import check_mesh, shard_array
from .._solver import AbstractInferenceSolver
from .._train import train
from .._validation import as_float_array
from ..theory import ClosedForm as ClosedForm
from ._trace import Context, Trace, trace_of

_OPTIMISERS: dict = {}


def optimiser_for(model: PCModel, config):
    """`pcscale.make_optimiser(model, config)`, reused across cells whose models share a
    structure and scalings (e.g. seeds of one width), so that their steps share one
    compiled program instead of recompiling for every new optax closure."""
    key = (jax.tree.structure(eqx.filter(model, eqx.is_array)), config)
    if key not in _OPTIMISERS:
        from .._optimiser import make_optimiser

        _OPTIMISERS[key] = make_optimiser(model, config)
    return _OPTIMISERS[key]


def train_lockstep(
    model: PCModel,
    x,
    y,
    *,
    optimiser,
    inference: AbstractInferenceSolver | AbstractInferenceMethod,
    steps: int,
    theory: bool = False,
    loss_scale: float = 1.0,
    progress: bool = False,
    description: str = "steps",
    on_step: Callable[[int], None] | None = None,
    mesh: Mesh | None = None,
) -> Trace:
    """Train `model` by PC and its BP twin by BP on one fixed batch for `steps` steps,
    recording a [`Trace`][pcscale.experiments.Trace]: `pcscale.train` with the batch
    fixed, its history read into the trace.

    **Arguments:**

    - `model`: the PC model at θ_0 (also the BP twin's start).
    - `x`, `y`: the fixed batch.
    - `optimiser`: from `pcscale.make_optimiser` (or `optimiser_for`), used for both twins.
    - `inference`: a pcscale inference solver, or an inference method such as
      [`ClosedForm()`][pcscale.theory.ClosedForm] for linear networks.
    - `steps`: T ≥ 1.
    - `theory`: with a numerical solver on a linear network, also compute F*, S and
      ∇F* at every step and compare the numerical solve with them (the closed form as
      `train`'s `reference`).
    - `loss_scale`: factor applied to logged energies and losses (1/T_seq for per-token
      transformer values). Cosines, norm ratios and F/𝓛 are unaffected: PC and BP
      gradients are both of token-summed objectives here, so their ratio carries no
      T_seq factor (docs/background.md §7, pitfall 15, divides it out of [R]'s per-token BP loss).
    - `progress`: show a progress bar over steps. `description`: its label.
    - `on_step`: called with t after every step (e.g. to sample memory).
    - `mesh`: a device mesh (`pcscale.make_data_mesh`) to run the cell data parallel: the
      batch is split over its devices (its size must be divisible by their number), the
      weights replicated.

    **Returns:** a [`Trace`][pcscale.experiments.Trace].
    """
    method = inference_method(inference, "inference")
    reference = ClosedForm() if theory and not method.exact else None
    if reference is not None:  # before the reference's own check, so that the error names the option
        check_model(model, "theory=True")
    x, y = as_float_array(x, "x"), as_float_array(y, "y")  # here, so that errors name `x` and `y`
    if mesh is not None:
        mesh = check_mesh(mesh)
        x, y = shard_array(x, mesh, "x"), shard_array(y, mesh, "y")
    run = train(model, (x, y), optimiser=optimiser, solver=method, steps=steps, progress=progress, mesh=mesh,
                reference=reference, description=description, on_step=on_step, warn=False)
    history = jax.tree.map(np.asarray, run.history)
    context = Context(scale=loss_scale, exact=method.exact, wall_time=np.asarray(run.wall_time))
    final_pc, final_bp = (float(v) * loss_scale for v in jax.device_get((run.final_pc_loss, run.final_bp_loss)))
    trace = trace_of(history, steps=steps, layers=len(model.layers), context=context, final_pc_loss=final_pc,
                     final_bp_loss=final_bp, failed=run.failed)
    if trace.failed:  # the trace's own (scaled) numbers, as its results file records them
        warnings.warn(f"{description}: training {trace.failure}; the loop stopped there. Fix: {ADVICE}.",
                      stacklevel=2)
    return trace
