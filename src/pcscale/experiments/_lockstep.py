"""The per-cell training loop of every experiment (docs/background.md §5.0): a PC model and its
BP twin trained side by side from one initial model and one optimiser, with every metric
measured at θ_t before update t and only scalars kept (pitfall 2 of docs/background.md §7)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Bool, Float, Int

from .._compare import GradientAlignment, compare_gradients
from .._gradients import energy_gradients, loss_gradients
from .._health import ADVICE, TrainingFailure, final_failure, step_failure
from .._infer import solve_activities
from .._precision import warn_if_uncertifiable
from .._model import PCModel
from .._sharding import check_mesh, follow_batch, replicate, shard_array
from .._solution import RESULTS
from .._solver import AbstractInferenceSolver
from .._solver._base import with_traced_numbers
from .._train import _check_optimiser, _guarded_update
from .._validation import as_float_array, validated
from ..theory._closed_form import closed_form_value_and_grad, linear_loss
from ..theory._structure import check_model, warn_if_unresolved


class ClosedForm(eqx.Module):
    """Inference by the closed form of docs/background.md §4.2 (linear networks, MSE): the PC
    gradient is ∇_θF* at the exact equilibrium, with no inference loop."""


class StepRecord(eqx.Module):
    """Every metric of one step, at θ_t before update t (scalars and per-layer vectors)."""

    pc_energy: Float[Array, ""]
    pc_loss: Float[Array, ""]
    bp_loss: Float[Array, ""]
    lockstep: GradientAlignment
    trajectory: GradientAlignment
    spectral_gap: Float[Array, ""]
    trace_gap: Float[Array, ""]
    closed_form_energy: Float[Array, ""]
    closed_form_cosine: Float[Array, ""]
    residual: Float[Array, ""]
    relative_residual: Float[Array, ""]
    inference_steps: Int[Array, ""]
    result: Int[Array, ""]
    pc_updated: Bool[Array, ""]
    bp_updated: Bool[Array, ""]


def _linear_loss_gradients(model, x, y):
    return eqx.filter_value_and_grad(linear_loss)(model, x, y)


@eqx.filter_jit
def _lockstep_step(pc_model, bp_model, pc_state, bp_state, x, y, optimiser, inference, theory, sharding):
    x, y = validated(pc_model, x, y)
    # A linear network's loss and its gradient come from the end-to-end map, B/d_y times
    # cheaper than the batched forward pass at large width.
    loss_and_grads = _linear_loss_gradients if isinstance(inference, ClosedForm) or theory else loss_gradients
    loss, loss_grads = loss_and_grads(pc_model, x, y)
    bp_loss, bp_grads = loss_and_grads(bp_model, x, y)
    nan = jnp.full((), jnp.nan, loss.dtype)
    zero = jnp.zeros((), loss.dtype)
    if isinstance(inference, ClosedForm):
        energy, scaling, _, pc_grads = closed_form_value_and_grad(pc_model, x, y)
        spectral, trace, f_star, cf_cosine = scaling.spectral_gap, scaling.trace_gap, energy, jnp.ones((), loss.dtype)
        residual, relative, steps, result = zero, zero, jnp.zeros((), jnp.int32), RESULTS.converged._value
        ok = jnp.array(True)
    else:
        solution = solve_activities(pc_model, x, y, inference, sharding=sharding)
        energy, pc_grads = energy_gradients(pc_model, solution.activities, x, y)
        stats = solution.stats
        residual, relative, steps = stats.residual, stats.relative_residual, stats.steps
        result = stats.result._value
        ok = stats.result != RESULTS.diverged
        if theory:
            f_star, scaling, _, cf_grads = closed_form_value_and_grad(pc_model, x, y)
            spectral, trace = scaling.spectral_gap, scaling.trace_gap
            cf_cosine = compare_gradients(pc_grads, cf_grads).cosine
        else:
            spectral = trace = f_star = cf_cosine = nan
    lockstep = compare_gradients(pc_grads, loss_grads)
    trajectory = compare_gradients(pc_grads, bp_grads)
    pc_model, pc_state, _, pc_ok = _guarded_update(pc_model, pc_state, pc_grads, optimiser, ok)
    bp_model, bp_state, _, bp_ok = _guarded_update(bp_model, bp_state, bp_grads, optimiser, True)
    record = StepRecord(
        pc_energy=energy, pc_loss=loss, bp_loss=bp_loss, lockstep=lockstep, trajectory=trajectory,
        spectral_gap=spectral, trace_gap=trace, closed_form_energy=f_star, closed_form_cosine=cf_cosine,
        residual=residual, relative_residual=relative, inference_steps=jnp.asarray(steps, jnp.int32),
        result=jnp.asarray(result, jnp.int32), pc_updated=pc_ok, bp_updated=bp_ok,
    )
    return pc_model, bp_model, pc_state, bp_state, record


@eqx.filter_jit
def _final_losses(pc_model, bp_model, x, y):
    x, y = validated(pc_model, x, y)
    return pc_model.loss(x, y), bp_model.loss(x, y)


# The `result` code of a step never run (after a training failure): no RESULTS code.
NOT_RUN = -1

# The per-step metrics of a results file, in order. Per-layer ones are (steps, layers).
SCALARS = (
    "pc_energy", "pc_loss", "bp_loss", "energy_loss_ratio", "spectral_gap", "trace_gap",
    "closed_form_energy", "closed_form_error", "closed_form_cosine",
    "cosine_lockstep", "cosine_trajectory", "norm_ratio_lockstep", "norm_ratio_trajectory",
    "residual", "relative_residual", "inference_steps", "converged", "result",
    "pc_updated", "bp_updated", "wall_time",
)
PER_LAYER = ("layer_cosine_lockstep", "layer_cosine_trajectory", "layer_norm_ratio_lockstep",
             "layer_norm_ratio_trajectory")


@dataclasses.dataclass(frozen=True)
class Trace:
    """Per-step metrics of one cell as NumPy arrays (axis 0 = step t, at θ_t before
    update t), and the losses at θ_T.

    - `pc_energy`: F at the final activities (F* in closed-form mode); `pc_loss`:
      𝓛(θ_t^PC); `bp_loss`: 𝓛(θ_t^BP); `energy_loss_ratio`: F/𝓛 at θ_t^PC. With a
      `loss_scale` (the transformer's 1/T_seq) energies and losses are per token.
    - `spectral_gap`, `trace_gap`: ‖S‖₂ − 1/λ and tr(S − I/λ)/d_y (linear networks; NaN
      otherwise); for d_y = 1 both are s − 1.
    - `closed_form_energy`, `closed_form_error` (|F − F*|/F*), `closed_form_cosine` (PC
      gradient against ∇F*): the numerical solve checked against the exact equilibrium
      (linear networks with `theory=True`; NaN otherwise).
    - `cosine_*`, `norm_ratio_*` and `layer_*`: the PC gradient against ∇𝓛 at the same
      weights (`lockstep`) and along the BP twin's trajectory (`trajectory`); undefined
      cosines are NaN.
    - `residual`, `relative_residual`, `inference_steps`, `result` (a
      `pcscale.RESULTS` index) and `converged`: the inference diagnostics (zero steps and
      converged in closed-form mode).
    - `pc_updated`, `bp_updated`: False where an update was refused (diverged inference,
      non-finite gradient) and skipped.
    - `wall_time`: seconds per step, including compilation at t = 0.
    - `failure`: None, or the [`TrainingFailure`][pcscale.TrainingFailure] (first failing
      step and reason) under the policy `pcscale.train` uses (docs/training.md); the
      loop stopped there, and later steps are NaN (False for flags, 0 inference steps,
      `result` −1: not run).
    """

    pc_energy: np.ndarray
    pc_loss: np.ndarray
    bp_loss: np.ndarray
    energy_loss_ratio: np.ndarray
    spectral_gap: np.ndarray
    trace_gap: np.ndarray
    closed_form_energy: np.ndarray
    closed_form_error: np.ndarray
    closed_form_cosine: np.ndarray
    cosine_lockstep: np.ndarray
    cosine_trajectory: np.ndarray
    norm_ratio_lockstep: np.ndarray
    norm_ratio_trajectory: np.ndarray
    residual: np.ndarray
    relative_residual: np.ndarray
    inference_steps: np.ndarray
    converged: np.ndarray
    result: np.ndarray
    pc_updated: np.ndarray
    bp_updated: np.ndarray
    wall_time: np.ndarray
    layer_cosine_lockstep: np.ndarray
    layer_cosine_trajectory: np.ndarray
    layer_norm_ratio_lockstep: np.ndarray
    layer_norm_ratio_trajectory: np.ndarray
    final_pc_loss: float
    final_bp_loss: float
    failure: TrainingFailure | None = None

    @property
    def steps(self) -> int:
        return len(self.pc_loss)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def converged_fraction(self) -> float:
        return float(np.mean(self.converged))


class _Buffers:
    """Preallocated host arrays, filled one step at a time: memory is fixed by the
    number of steps and layers when the loop starts and never grows."""

    def __init__(self, steps: int, layers: int):
        self.scalars = {name: np.full(steps, np.nan) for name in SCALARS}
        self.scalars["inference_steps"] = np.zeros(steps, np.int64)
        self.scalars["result"] = np.full(steps, NOT_RUN, np.int64)  # steps after a failure stay NOT_RUN
        for name in ("converged", "pc_updated", "bp_updated"):
            self.scalars[name] = np.zeros(steps, bool)
        self.layers = {name: np.full((steps, layers), np.nan) for name in PER_LAYER}

    def fill(self, t: int, record: StepRecord, seconds: float, scale: float) -> None:
        r = jax.device_get(record)
        s = self.scalars
        s["pc_energy"][t] = r.pc_energy * scale
        s["pc_loss"][t] = r.pc_loss * scale
        s["bp_loss"][t] = r.bp_loss * scale
        s["energy_loss_ratio"][t] = r.pc_energy / r.pc_loss if r.pc_loss > 0 else np.nan
        s["spectral_gap"][t], s["trace_gap"][t] = r.spectral_gap, r.trace_gap
        s["closed_form_energy"][t] = r.closed_form_energy * scale
        s["closed_form_error"][t] = abs(r.pc_energy - r.closed_form_energy) / abs(r.closed_form_energy)
        s["closed_form_cosine"][t] = r.closed_form_cosine
        for mode in ("lockstep", "trajectory"):
            alignment = getattr(r, mode)
            s[f"cosine_{mode}"][t] = np.where(alignment.defined, alignment.cosine, np.nan)
            s[f"norm_ratio_{mode}"][t] = alignment.norm_ratio
            self.layers[f"layer_cosine_{mode}"][t] = np.where(alignment.layer_defined, alignment.layer_cosines, np.nan)
            self.layers[f"layer_norm_ratio_{mode}"][t] = np.where(
                alignment.layer_defined, alignment.layer_norm_ratios, np.nan)
        s["residual"][t], s["relative_residual"][t] = r.residual, r.relative_residual
        s["inference_steps"][t], s["result"][t] = r.inference_steps, r.result
        s["converged"][t] = r.result == RESULTS.converged._value
        s["pc_updated"][t], s["bp_updated"][t] = r.pc_updated, r.bp_updated
        s["wall_time"][t] = seconds


def failure_at(scalars, t: int) -> TrainingFailure | None:
    """Step t's failure under the shared policy (pcscale._health), read from a trace's
    per-step metrics (metric name → array over steps); the batch is fixed."""
    return step_failure(t, {name: values[t] for name, values in scalars.items() if name in _HEALTH},
                        initial_pc_loss=float(scalars["pc_loss"][0]), initial_bp_loss=float(scalars["bp_loss"][0]))


_HEALTH = ("pc_loss", "bp_loss", "pc_energy", "pc_updated", "bp_updated", "result")


def trace_failure(metrics: dict, final_pc_loss: float, final_bp_loss: float) -> TrainingFailure | None:
    """The first failure of a whole trace's metrics (for results files written before
    failures were recorded)."""
    steps = len(metrics["pc_loss"])
    for t in range(steps):
        failure = failure_at(metrics, t)
        if failure is not None:
            return failure
    return final_failure(steps, pc_loss=final_pc_loss, bp_loss=final_bp_loss,
                         initial_pc_loss=metrics["pc_loss"][0], initial_bp_loss=metrics["bp_loss"][0])


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
    inference: AbstractInferenceSolver | ClosedForm,
    steps: int,
    theory: bool = False,
    loss_scale: float = 1.0,
    progress: bool = False,
    description: str = "steps",
    on_step: Callable[[int], None] | None = None,
    mesh: Mesh | None = None,
) -> Trace:
    """Train `model` by PC and its BP twin by BP on one fixed batch for `steps` steps,
    recording a [`Trace`][pcscale.experiments.Trace].

    **Arguments:**

    - `model`: the PC model at θ_0 (also the BP twin's start).
    - `x`, `y`: the fixed batch.
    - `optimiser`: from `pcscale.make_optimiser` (or `optimiser_for`), used for both twins.
    - `inference`: a pcscale inference solver, or [`ClosedForm()`][pcscale.experiments.ClosedForm]
      for linear networks.
    - `steps`: T ≥ 1.
    - `theory`: with a numerical solver on a linear network, also compute F*, S and
      ∇F* at every step and compare the numerical solve with them.
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
    if isinstance(inference, ClosedForm) or theory:
        check_model(model, "closed-form inference" if isinstance(inference, ClosedForm) else "theory=True")
    elif not isinstance(inference, AbstractInferenceSolver):
        raise TypeError(
            f"`inference` must be a pcscale inference solver or pcscale.experiments.ClosedForm(), got "
            f"{type(inference).__name__}."
        )
    else:
        inference = with_traced_numbers(inference)
    _check_optimiser(optimiser)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int, got {steps!r}; e.g. steps=20.")
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    if mesh is not None:
        mesh = check_mesh(mesh)
        x, y, model = shard_array(x, mesh, "x"), shard_array(y, mesh, "y"), replicate(model, mesh)
    y, _, sharding = follow_batch(x, y)
    if isinstance(inference, AbstractInferenceSolver):  # say so before solving, once
        warn_if_uncertifiable(model, x, y, inference, stacklevel=2)
    from .._progress import progress_bar

    pc_model = bp_model = model
    pc_state = bp_state = optimiser.init(eqx.filter(model, eqx.is_array))
    buffers = _Buffers(steps, len(model.layers))
    bar = progress_bar(total=steps, disable=not progress, desc=description, unit="step", leave=False)
    failure = None
    for t in range(steps):
        start = time.perf_counter()
        pc_model, bp_model, pc_state, bp_state, record = _lockstep_step(
            pc_model, bp_model, pc_state, bp_state, x, y, optimiser, inference, bool(theory), sharding
        )
        record = jax.block_until_ready(record)
        buffers.fill(t, record, time.perf_counter() - start, loss_scale)
        if t == 0 and (isinstance(inference, ClosedForm) or theory):
            # docs/background.md §7, pitfall 1: say so when float32 cannot resolve ‖S‖ − 1/λ.
            warn_if_unresolved(lambda: record.spectral_gap, model, "train_lockstep")
        if progress:
            bar.set_postfix(cos=f"{buffers.scalars['cosine_lockstep'][t]:.4f}",
                            infer=int(buffers.scalars["inference_steps"][t]))
            bar.update(1)
        if on_step is not None:
            on_step(t)
        failure = failure_at(buffers.scalars, t)
        if failure is not None:  # every later step would start from the same state
            break
    bar.close()
    final_pc, final_bp = (float(v) * loss_scale for v in jax.device_get(_final_losses(pc_model, bp_model, x, y)))
    if failure is None:
        failure = final_failure(steps, pc_loss=final_pc, bp_loss=final_bp,
                                initial_pc_loss=buffers.scalars["pc_loss"][0],
                                initial_bp_loss=buffers.scalars["bp_loss"][0])
    if failure is not None:
        import warnings

        warnings.warn(f"{description}: training {failure}; the loop stopped there. Fix: {ADVICE}.", stacklevel=2)
    return Trace(**buffers.scalars, **buffers.layers, final_pc_loss=final_pc, final_bp_loss=final_bp,
                 failure=failure)
