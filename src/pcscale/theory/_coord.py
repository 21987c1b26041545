"""Coordinate checks: are activations, errors and updates width- (or depth-) stable?"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._equilibrium import IterativeInference, inference_method
from .._model import PCModel
from .._optimiser import AbstractOptimiser, make_optimiser
from .._precise import precise_jit
from .._progress import progress_bar
from .._solution import RESULTS
from .._solver import AbstractInferenceSolver, auto_solver
from .._step import pc_update
from .._validation import validated


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


def spread(values: Sequence[Array]) -> Float[Array, " ..."]:
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


@precise_jit
def _measure_step(model, opt_state, x, y, optimiser, method):
    x, y = validated(model, x, y)
    inputs = (x,) + tuple(jax.vmap(model.activities_one)(x))
    # At the feedforward state each map's prediction f_l(z_{l−1}) is z_l itself, so only
    # the readout's output needs computing.
    output = jax.vmap(model.layers[-1])(inputs[-1])
    # The update is applied whatever the solve's outcome; `converged` records it.
    new, opt_state, found, _ = pc_update(model, opt_state, x, y, optimiser, method, True)
    errors = model.errors(found.activities, x)
    own = [
        jax.vmap(after)(z_prev) - before
        for after, z_prev, before in zip(new.layers, inputs, inputs[1:] + (output,), strict=True)
    ]
    new_inputs = (x,) + tuple(jax.vmap(new.activities_one)(x))
    change = [after - before for before, after in zip(inputs[1:], new_inputs[1:], strict=True)]
    scales = (
        _rms(inputs[1:]), _rms([jnp.reshape(output, -1)])[0], _rms(errors), _rms(change), _rms(own[:-1]),
        _rms(own[-1:])[0], found.stats.result == RESULTS.converged,
    )
    return new, opt_state, scales


@precise_jit
def _measure_final(model, x, y):
    x, _ = validated(model, x, y)
    activities = jax.vmap(model.activities_one)(x)
    return _rms(activities), _rms([jnp.reshape(jax.vmap(model.forward_one)(x), -1)])[0]


def coord_check(
    make_model: Callable[..., PCModel],
    sizes: Sequence[int],
    x: ArrayLike,
    y: ArrayLike,
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
    bar = progress_bar(total=len(runs), desc="coord check", unit="model", disable=not progress)
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
            final_activation, final_output = _measure_final(model, x, y)
            per_seed.append(_collect(records, final_activation, final_output))
            hits.extend(bool(r[-1]) for r in records)
            bar.update(1)
        for name in fields:
            fields[name].append(jnp.mean(jnp.stack([run[name] for run in per_seed]), axis=0))
        converged.append(float(np.mean(hits)))
    bar.close()
    return CoordCheck(
        sizes=tuple(int(s) for s in sizes), steps=steps, converged=tuple(converged),
        **{name: tuple(values) for name, values in fields.items()},
    )


def _solver_for(model, x, solver) -> IterativeInference:
    if solver is None:
        solver = auto_solver(model, x)
    elif not isinstance(solver, AbstractInferenceSolver) and callable(solver):
        solver = solver(model)
    if isinstance(solver, AbstractInferenceSolver):
        method = inference_method(solver)
        assert isinstance(method, IterativeInference)
        return method
    raise TypeError(
        f"`solver` must be an inference solver, a function model -> solver, or None, got {solver!r} "
        "(the check measures prediction errors, so it needs an iterative solver's activities)."
    )


def _collect(records, final_activation, final_output) -> dict[str, Array]:
    activation, output, error, update, own, output_update, _ = (list(column) for column in zip(*records, strict=True))
    return {
        "activation": jnp.stack(activation + [final_activation]),
        "output": jnp.stack(output + [final_output]),
        "error": jnp.stack(error),
        "update": jnp.stack(update),
        "own_update": jnp.stack(own),
        "output_update": jnp.stack(output_update),
    }
