"""Coordinate checks: are activations, errors and updates width- (or depth-) stable?"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._infer import solve_activities
from .._model import PCModel
from .._optimiser import AbstractOptimiser, make_optimiser
from .._solution import RESULTS
from .._solver import AbstractInferenceSolver
from .._solver._base import with_traced_numbers
from .._train import _guarded_update
from .._files import atomic_path
from .._gradients import energy_gradients
from .._validation import validated
from ._auto import auto_solver


class CoordCheck(eqx.Module):
    """Per-layer scales of a model family over a list of sizes (widths or depths), each
    averaged over seeds. Every scale is a root mean square over batch, units, positions
    and tokens. Layers are the hidden maps f_1 … f_H (their activities z_1 … z_H); the
    readout is reported separately (`output`, `output_update`).

    - `sizes`: the sizes, as passed to the model family.
    - `steps`: k, the number of PC training steps taken.
    - `activation[i]`: (k+1, H) RMS of the feedforward activities z_l(θ_t), t = 0 … k.
    - `error[i]`: (k, H) RMS of the prediction errors ε_l at the inferred activities of
      step t (zero at the feedforward state, so measured after inference).
    - `update[i]`: (k, H) RMS of the feature update z_l(θ_{t+1}) − z_l(θ_t) of step t,
      own and upstream weight updates together: how far features move per step.
    - `own_update[i]`: (k, H) RMS of f_l(z_{l−1}; θ_{t+1}) − f_l(z_{l−1}; θ_t) at the
      fixed input z_{l−1}(θ_t): the part of the update made by map l's own weights (μP's
      ΔW·x). Exactly zero for maps without weights (pooling). At small widths its
      sign-like Adam updates are far from the large-width limit (the coherent part of
      ΔW·x is O(1), the incoherent part O(1/√fan_in) only relative to it), so it
      converges more slowly in width than `update`.
    - `output[i]`: (k+1,) RMS of the network output ŷ(θ_t); `output_update[i]`: (k,) RMS
      of the readout's own update.
    - `converged[i]`: fraction of the inference solves (over seeds and steps) that met
      their tolerance.
    """

    sizes: tuple[int, ...]
    steps: int
    activation: tuple[Float[Array, "steps1 layers"], ...]
    error: tuple[Float[Array, "steps layers"], ...]
    update: tuple[Float[Array, "steps layers"], ...]
    own_update: tuple[Float[Array, "steps layers"], ...]
    output: tuple[Float[Array, " steps1"], ...]
    output_update: tuple[Float[Array, " steps"], ...]
    converged: tuple[float, ...]


def spread(values: Sequence[Array]) -> Float[Array, "..."]:
    """max/min over sizes of a per-size scale (e.g. `CoordCheck.update`), elementwise:
    1 for a perfectly size-independent scale. NaN where every size is exactly zero
    (a map without weights has no update to compare).

    **Arguments:** `values`, one array per size, all of one shape (a width sweep).
    """
    shapes = {tuple(np.shape(v)) for v in values}
    if len(shapes) != 1:
        raise ValueError(
            f"the scales have different shapes across sizes {sorted(shapes)} (a depth sweep has a "
            "different number of layers per size); compare one layer at a time instead."
        )
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    high, low = stacked.max(axis=0), stacked.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(high == 0.0, np.nan, high / low)
    return jnp.asarray(ratio)


def _rms(tree) -> Array:
    return jnp.stack([jnp.sqrt(jnp.mean(jnp.square(leaf))) for leaf in tree])


@eqx.filter_jit
def _measure_step(model, opt_state, x, y, optimiser, solver):
    x, y = validated(model, x, y)
    inputs = (x,) + tuple(jax.vmap(model.activities_one)(x))
    # At the feedforward state each map's prediction f_l(z_{l−1}) is z_l itself, so only
    # the readout's output needs computing.
    output = jax.vmap(model.layers[-1])(inputs[-1])
    solution = solve_activities(model, x, y, solver)
    errors = model.errors(solution.activities, x)
    _, grads = energy_gradients(model, solution.activities, x, y)
    new, opt_state, _, _ = _guarded_update(model, opt_state, grads, optimiser, jnp.array(True))
    own = [
        jax.vmap(after)(z_prev) - before
        for after, z_prev, before in zip(new.layers, inputs, inputs[1:] + (output,))
    ]
    new_inputs = (x,) + tuple(jax.vmap(new.activities_one)(x))
    change = [after - before for before, after in zip(inputs[1:], new_inputs[1:])]
    scales = (
        _rms(inputs[1:]), _rms([jnp.reshape(output, -1)])[0], _rms(errors), _rms(change), _rms(own[:-1]),
        _rms(own[-1:])[0], solution.result == RESULTS.converged,
    )
    return new, opt_state, scales


@eqx.filter_jit
def _measure_final(model, x):
    x, _ = model._check(x)
    activities = jax.vmap(model.activities_one)(x)
    return _rms(activities), _rms([jnp.reshape(jax.vmap(model.forward_one)(x), -1)])[0]


def coord_check(
    make_model: Callable[..., PCModel],
    sizes: Sequence[int],
    x: Array,
    y: Array,
    *,
    optimiser: AbstractOptimiser,
    solver: AbstractInferenceSolver | Callable[[PCModel], AbstractInferenceSolver] | None = None,
    steps: int = 3,
    seeds: int = 1,
    progress: bool = False,
    key: PRNGKeyArray,
) -> CoordCheck:
    """Coordinate check of a model family: per-layer activation, prediction-error and
    update scales at initialisation and over `steps` PC training steps, for each size.

    Under a width-stable parameterisation (μP, μPC, CompleteP) the activation and update
    scales of every hidden layer stay O(1) as the width grows; under SP with a fixed
    learning rate the updates grow with width. Compare sizes with
    [`spread`][pcscale.theory.spread], plot with `pcscale.plots.coord_check`.

    **Arguments:**

    - `make_model`: `make_model(size, key=key) -> PCModel`, e.g.
      `lambda width, key: pc.nn.resnet(3, width, 10, parameterisation=pc.MuPC(), key=key)`.
    - `sizes`: the widths (or depths) to check.
    - `x`, `y`: one fixed batch, used at every step and size.
    - `optimiser`: an optimiser configuration, e.g. `pcscale.Adam(1e-2)`; its per-weight
      scales come from each model's parameterisation.
    - `solver`: an inference solver, or a function `model -> solver`; default
      [`auto_solver`][pcscale.auto_solver] for each model.
    - `steps`: k ≥ 1 PC training steps. Default 3.
    - `seeds`: independent initialisations to average over. Default 1.
    - `progress`: show a progress bar over sizes and seeds.
    - `key`: PRNG key; seed s uses `jax.random.fold_in(key, s)` at every size.

    **Returns:** a [`CoordCheck`][pcscale.theory.CoordCheck].
    """
    sizes = tuple(sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise ValueError(f"`sizes` must be a non-empty sequence of positive integers, got {sizes!r}.")
    for name, value in (("steps", steps), ("seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not isinstance(optimiser, AbstractOptimiser):
        raise TypeError(
            f"`optimiser` must be a pcscale optimiser configuration such as pcscale.Adam(1e-2), got "
            f"{optimiser!r}."
        )
    fields = {name: [] for name in ("activation", "error", "update", "own_update", "output", "output_update")}
    converged = []
    runs = [(size, seed) for size in sizes for seed in range(seeds)]
    bar = _progress(len(runs), progress)
    for size in sizes:
        per_seed = []
        hits = []
        transform = None
        for seed in range(seeds):
            model = make_model(int(size), key=jax.random.fold_in(key, seed))
            if not isinstance(model, PCModel):
                raise TypeError(f"`make_model` must return a PCModel, got {type(model).__name__}.")
            if model.num_hidden == 0:
                raise ValueError("the model has no hidden layer, so there is nothing to check.")
            chosen = _solver_for(model, x, solver)
            if transform is None:
                # One transformation per size: every seed then reuses the compiled step.
                transform = make_optimiser(model, optimiser)
            opt_state = transform.init(eqx.filter(model, eqx.is_array))
            records = []
            for _ in range(steps):
                model, opt_state, scales = _measure_step(model, opt_state, x, y, transform, chosen)
                records.append(scales)
            final_activation, final_output = _measure_final(model, x)
            per_seed.append(_collect(records, final_activation, final_output))
            hits.extend(bool(r[-1]) for r in records)
            bar(1)
        for name in fields:
            fields[name].append(jnp.mean(jnp.stack([run[name] for run in per_seed]), axis=0))
        converged.append(float(np.mean(hits)))
    bar(None)
    return CoordCheck(
        sizes=tuple(int(s) for s in sizes), steps=steps, converged=tuple(converged),
        **{name: tuple(values) for name, values in fields.items()},
    )


def _solver_for(model, x, solver) -> AbstractInferenceSolver:
    if solver is None:
        return with_traced_numbers(auto_solver(model, x))
    if isinstance(solver, AbstractInferenceSolver):
        return with_traced_numbers(solver)
    if callable(solver):
        chosen = solver(model)
        if isinstance(chosen, AbstractInferenceSolver):
            return with_traced_numbers(chosen)
    raise TypeError(
        f"`solver` must be an inference solver, a function model -> solver, or None, got {solver!r}."
    )


def _collect(records, final_activation, final_output) -> dict[str, Array]:
    activation, output, error, update, own, output_update, _ = (list(column) for column in zip(*records))
    return {
        "activation": jnp.stack(activation + [final_activation]),
        "output": jnp.stack(output + [final_output]),
        "error": jnp.stack(error),
        "update": jnp.stack(update),
        "own_update": jnp.stack(own),
        "output_update": jnp.stack(output_update),
    }


def _progress(total: int, enabled: bool):
    if not enabled:
        return lambda _: None
    from .._progress import progress_bar

    bar = progress_bar(total=total, desc="coord check", unit="model")

    def advance(count):
        if count is None:
            bar.close()
        else:
            bar.update(count)

    return advance


_ARRAY_FIELDS = ("activation", "error", "update", "own_update", "output", "output_update")


def coord_check_record(result: CoordCheck) -> dict:
    """A [`CoordCheck`][pcscale.theory.CoordCheck] as plain JSON-compatible values."""
    if not isinstance(result, CoordCheck):
        raise TypeError(f"`result` must be a CoordCheck, got {type(result).__name__}.")
    record = {"sizes": list(result.sizes), "steps": result.steps, "converged": list(result.converged)}
    for name in _ARRAY_FIELDS:
        record[name] = [np.asarray(v, dtype=np.float64).tolist() for v in getattr(result, name)]
    return record


def coord_check_from_record(record: dict, source: str = "the record") -> CoordCheck:
    """The inverse of `coord_check_record`."""
    missing = [name for name in ("sizes", "steps", "converged") + _ARRAY_FIELDS if name not in record]
    if missing:
        raise ValueError(f"{source} is not a coordinate-check record: it lacks {missing}.")
    arrays = {name: tuple(jnp.asarray(v) for v in record[name]) for name in _ARRAY_FIELDS}
    return CoordCheck(
        sizes=tuple(record["sizes"]), steps=int(record["steps"]), converged=tuple(record["converged"]), **arrays
    )


def save_coord_check(result: CoordCheck, path) -> None:
    """Write a [`CoordCheck`][pcscale.theory.CoordCheck] to a JSON file, atomically
    (temporary file, then rename), so that an interrupted write never leaves a partial
    file."""
    record = coord_check_record(result)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record))


def load_coord_check(path) -> CoordCheck:
    """Read a [`CoordCheck`][pcscale.theory.CoordCheck] written by `save_coord_check`."""
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"no coordinate-check file at {str(path)!r}; write one with save_coord_check.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not a coordinate-check JSON file ({error}).") from None
    return coord_check_from_record(record, f"{str(path)!r}")
