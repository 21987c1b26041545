"""The per-step metrics of a cell: `Trace`, whose fields are the only definition of a
metric. Each field declares its kind (float, count, result code, flag), whether it is per
layer, and how it is read from the training loop's history; the buffers of a trace, the
results files' writer and reader and the failure policy's view all derive from them, so
a new metric is one field here (plus its test)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .._health import TrainingFailure, final_failure, step_failure
from .._solution import RESULTS

# The `result` code of a step never run (after a training failure): no RESULTS code.
NOT_RUN = -1
_CONVERGED = int(RESULTS.converged._value)


@dataclasses.dataclass(frozen=True)
class Kind:
    """A metric's storage: its NumPy `dtype` and the value of a step never run."""

    dtype: type
    empty: Any

    def decode(self, values) -> np.ndarray:
        """A results file's JSON list as an array (JSON null is NaN for floats)."""
        if self.dtype is not np.float64:
            return np.asarray(values, dtype=self.dtype)
        return np.array([[np.nan if v is None else v for v in row] if isinstance(row, list) else
                         (np.nan if row is None else row) for row in values], dtype=float)


FLOAT, COUNT, CODE, FLAG = Kind(np.float64, np.nan), Kind(np.int64, 0), Kind(np.int64, NOT_RUN), Kind(np.bool_, False)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a metric's reader needs besides the history: the factor applied to energies
    and losses (`scale`), whether the inference method was exact, the per-step wall
    times."""

    scale: float
    exact: bool
    wall_time: np.ndarray


@dataclasses.dataclass(frozen=True)
class Metric:
    kind: Kind
    read: Callable[[Any, Context], np.ndarray]
    per_layer: bool = False


def _metric(kind: Kind, read: Callable[[Any, Context], Any], *, per_layer: bool = False):
    return dataclasses.field(metadata={"metric": Metric(kind, read, per_layer)})


def _gap(h, name: str):
    gaps = h.pc.diagnostics if h.reference is None else h.reference.diagnostics
    return np.full(len(h.bp_loss), np.nan) if gaps is None else getattr(gaps, name)


def _reference(h, c: Context, name: str):
    """The reference equilibrium's energy or cosine: a reference method's, the solve
    itself for an exact method (energy F*, cosine 1), NaN without either."""
    if h.reference is not None:
        return getattr(h.reference, name)
    if c.exact:
        return h.pc.energy if name == "energy" else np.ones(len(h.bp_loss))
    return np.full(len(h.bp_loss), np.nan)


def _where_defined(alignment, layer: bool = False):
    defined, cosine = (alignment.layer_defined, alignment.layer_cosines) if layer else (alignment.defined,
                                                                                          alignment.cosine)
    return np.where(defined, cosine, np.nan)


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

    pc_energy: np.ndarray = _metric(FLOAT, lambda h, c: h.pc.energy * c.scale)
    pc_loss: np.ndarray = _metric(FLOAT, lambda h, c: h.pc.loss * c.scale)
    bp_loss: np.ndarray = _metric(FLOAT, lambda h, c: h.bp_loss * c.scale)
    energy_loss_ratio: np.ndarray = _metric(FLOAT, lambda h, c: h.energy_loss_ratio)
    spectral_gap: np.ndarray = _metric(FLOAT, lambda h, c: _gap(h, "spectral_gap"))
    trace_gap: np.ndarray = _metric(FLOAT, lambda h, c: _gap(h, "trace_gap"))
    closed_form_energy: np.ndarray = _metric(FLOAT, lambda h, c: _reference(h, c, "energy") * c.scale)
    closed_form_error: np.ndarray = _metric(
        FLOAT, lambda h, c: np.abs(h.pc.energy - _reference(h, c, "energy")) / np.abs(_reference(h, c, "energy")))
    closed_form_cosine: np.ndarray = _metric(FLOAT, lambda h, c: _reference(h, c, "cosine"))
    cosine_lockstep: np.ndarray = _metric(FLOAT, lambda h, c: _where_defined(h.lockstep))
    cosine_trajectory: np.ndarray = _metric(FLOAT, lambda h, c: _where_defined(h.trajectory))
    norm_ratio_lockstep: np.ndarray = _metric(FLOAT, lambda h, c: h.lockstep.norm_ratio)
    norm_ratio_trajectory: np.ndarray = _metric(FLOAT, lambda h, c: h.trajectory.norm_ratio)
    residual: np.ndarray = _metric(FLOAT, lambda h, c: h.pc.inference.residual)
    relative_residual: np.ndarray = _metric(FLOAT, lambda h, c: h.pc.inference.relative_residual)
    inference_steps: np.ndarray = _metric(COUNT, lambda h, c: h.pc.inference.steps)
    converged: np.ndarray = _metric(FLAG, lambda h, c: h.pc.inference.result._value == _CONVERGED)
    result: np.ndarray = _metric(CODE, lambda h, c: h.pc.inference.result._value)
    pc_updated: np.ndarray = _metric(FLAG, lambda h, c: h.pc.updated)
    bp_updated: np.ndarray = _metric(FLAG, lambda h, c: h.bp_updated)
    wall_time: np.ndarray = _metric(FLOAT, lambda h, c: c.wall_time)
    layer_cosine_lockstep: np.ndarray = _metric(FLOAT, lambda h, c: _where_defined(h.lockstep, True), per_layer=True)
    layer_cosine_trajectory: np.ndarray = _metric(
        FLOAT, lambda h, c: _where_defined(h.trajectory, True), per_layer=True)
    layer_norm_ratio_lockstep: np.ndarray = _metric(
        FLOAT, lambda h, c: np.where(h.lockstep.layer_defined, h.lockstep.layer_norm_ratios, np.nan), per_layer=True)
    layer_norm_ratio_trajectory: np.ndarray = _metric(
        FLOAT, lambda h, c: np.where(h.trajectory.layer_defined, h.trajectory.layer_norm_ratios, np.nan),
        per_layer=True)
    final_pc_loss: float = dataclasses.field(kw_only=True)
    final_bp_loss: float = dataclasses.field(kw_only=True)
    failure: TrainingFailure | None = dataclasses.field(default=None, kw_only=True)

    @property
    def steps(self) -> int:
        return len(self.pc_loss)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def converged_fraction(self) -> float:
        return float(np.mean(self.converged))


METRICS: dict[str, Metric] = {f.name: f.metadata["metric"] for f in dataclasses.fields(Trace) if "metric" in f.metadata}
SCALARS = tuple(name for name, metric in METRICS.items() if not metric.per_layer)
PER_LAYER = tuple(name for name, metric in METRICS.items() if metric.per_layer)


def trace_of(history, *, steps: int, layers: int, context: Context, final_pc_loss: float, final_bp_loss: float,
             failed: bool) -> Trace:
    """The [`Trace`][pcscale.experiments.Trace] of a training loop's host `history` (a
    `pcscale.ComparisonMetrics` of NumPy arrays over the steps that ran), padded to
    `steps` with each metric's not-run value. `failed`: whether the run failed (its
    failure is then re-read from the trace's own, scaled, numbers)."""
    arrays = {}
    ran = len(history.bp_loss)
    for name, metric in METRICS.items():
        shape = (steps, layers) if metric.per_layer else (steps,)
        arrays[name] = np.full(shape, metric.kind.empty, metric.kind.dtype)
        arrays[name][:ran] = metric.read(history, context)
    failure = trace_failure(arrays, final_pc_loss, final_bp_loss) if failed else None
    return Trace(**arrays, final_pc_loss=final_pc_loss, final_bp_loss=final_bp_loss, failure=failure)


def trace_to_json(trace: Trace) -> dict[str, np.ndarray]:
    """A trace's metrics by name, for a results file."""
    return {name: getattr(trace, name) for name in METRICS}


def trace_from_json(metrics: dict, final_pc_loss: float, final_bp_loss: float, *, recorded: bool,
                    failure: TrainingFailure | None = None) -> Trace:
    """A trace from a results file's metrics, with its recorded `failure`; a file written
    before failures were recorded (`recorded` False) is judged by the policy now."""
    arrays = {name: metric.kind.decode(metrics[name]) for name, metric in METRICS.items()}
    if not recorded:
        failure = trace_failure(arrays, final_pc_loss, final_bp_loss)
    return Trace(**arrays, final_pc_loss=final_pc_loss, final_bp_loss=final_bp_loss, failure=failure)


_HEALTH = ("pc_loss", "bp_loss", "pc_energy", "pc_updated", "bp_updated", "result")


def failure_at(scalars, t: int) -> TrainingFailure | None:
    """Step t's failure under the shared policy (pcscale._health), read from a trace's
    per-step metrics (metric name → array over steps); the batch is fixed."""
    return step_failure(t, {name: values[t] for name, values in scalars.items() if name in _HEALTH},
                        initial_pc_loss=float(scalars["pc_loss"][0]), initial_bp_loss=float(scalars["bp_loss"][0]))


def trace_failure(metrics: dict, final_pc_loss: float, final_bp_loss: float) -> TrainingFailure | None:
    """The first failure of a whole trace's metrics (also for results files written
    before failures were recorded)."""
    steps = len(metrics["pc_loss"])
    for t in range(steps):
        failure = failure_at(metrics, t)
        if failure is not None:
            return failure
    return final_failure(steps, pc_loss=final_pc_loss, bp_loss=final_bp_loss,
                         initial_pc_loss=metrics["pc_loss"][0], initial_bp_loss=metrics["bp_loss"][0])
