"""Per-layer precisions of the prediction errors: fixed weights, learnt variances, and the
depth-stable choice."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._model import PCModel
from ._validation import is_finite_real


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not (is_finite_real(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}; e.g. {name}=2.0.")
    return float(value)


def with_precisions(
    model: PCModel, *, hidden: float | Sequence[float] | None = None, output: float | None = None
) -> PCModel:
    """`model` with fixed precisions: F = Σ_l (π_l/2)·‖ε_l‖² + λ·ℓ.

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel] (from any builder).
    - `hidden`: π for every hidden error (a number), or one per hidden layer (a sequence
      of H numbers); default: keep the layers' own.
    - `output`: λ, the output precision; default: keep the model's.

    Inference, the Gauss–Newton preconditioner and the linear theory (S = I/λ +
    Σ_l G_l Π_l⁻¹ G_lᵀ, the exact activities, F*) all read them.
    """
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    layers = list(model.layers)
    if hidden is not None:
        count = model.num_hidden
        if isinstance(hidden, (int, float, numbers.Real)):
            values = [_positive(hidden, "hidden")] * count
        elif not isinstance(hidden, Sequence):
            raise TypeError(f"`hidden` must be a number or a sequence of numbers, got {type(hidden).__name__}.")
        else:
            values = [_positive(v, f"hidden[{i}]") for i, v in enumerate(hidden)]
            if len(values) != count:
                raise ValueError(
                    f"`hidden` must be one number or {count} numbers (one per hidden layer of this "
                    f"depth-{model.depth} model), got {len(values)}."
                )
        layers[:count] = [dataclasses.replace(layer, precision=v) for layer, v in zip(layers, values, strict=False)]
    precision = model.output_precision if output is None else _positive(output, "output")
    return PCModel(tuple(layers), model.output_energy, output_precision=precision)


def with_learnt_variances(
    model: PCModel, *, per_unit_input_shape: tuple[int, ...] | None = None, initial: float = 1.0
) -> PCModel:
    """`model` with a learnt variance for every hidden error: the layer's term of the
    energy becomes (π_l/2)·Σ_k ε_k²/σ²_k + ½·Σ_k log σ²_k, and log σ² is a
    parameter (`PCLayer.log_variance`) that the PC update learns with the weights. At a
    fixed point σ² is π_l times the mean of ε² over the batch (and the units, for one
    variance per layer). With free hidden activities that fixed point is unstable
    (docs/pc_family.md, "Learnt variances"); the linear theory refuses such a model.

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `per_unit_input_shape`: None (default) for one variance per layer; the per-sample
      input shape (e.g. `(784,)`) for one variance per unit, whose activity shapes it
      determines.
    - `initial`: σ² at the start. Default 1.
    """
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    initial = _positive(initial, "initial")
    dtype = model.dtype or jnp.float32
    if per_unit_input_shape is None:
        shapes = [()] * model.num_hidden
    else:
        example = jax.ShapeDtypeStruct(tuple(per_unit_input_shape), dtype)
        shapes = [tuple(s.shape) for s in jax.eval_shape(model.activities_one, example)]
    layers = [
        dataclasses.replace(layer, log_variance=jnp.full(shape, math.log(initial), dtype))
        for layer, shape in zip(model.layers[:-1], shapes, strict=True)
    ]
    return PCModel(tuple(layers) + (model.layers[-1],), model.output_energy, output_precision=model.output_precision)


def depth_stable_precisions(width: int, depth: int, gamma0: float = 1.0) -> tuple[float, float]:
    """The hidden and output precisions (κ, λ) = (L, γ0²·N·L) used for depth-stable μPC
    training with the readout 1/(γ0·N): pass them as
    `with_precisions(model, hidden=κ, output=λ)`."""
    for name, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    gamma0 = _positive(gamma0, "gamma0")
    return float(depth), gamma0**2 * width * depth
