"""auto_solver: the inference solver pcscale recommends for a model (docs/inference.md)."""

from __future__ import annotations

import numbers

import equinox as eqx

from .._model import PCModel
from .._solver import AbstractInferenceSolver, ConjugateGradient, DepthPreconditioner, GradientDescent, NewtonKrylov
from ._hessian import is_linear
from ._structure import input_shape


def auto_solver(model: PCModel, x=None, *, rtol: float = 1e-6, atol: float = 0.0) -> AbstractInferenceSolver:
    r"""The inference solver to use for `model`, by a documented rule:

    1. no hidden layer (depth 1): nothing to solve → `GradientDescent` (stops at once);
    2. a linear or affine network (identity activation, linear layer maps with or without
       biases, MSE output: the energy is quadratic in the activities) →
       [`ConjugateGradient`][pcscale.ConjugateGradient],
       exact in at most n steps and O(√κ·log(1/rtol)) in practice;
    3. any other network → [`NewtonKrylov`][pcscale.NewtonKrylov], globalised by a line
       search, so it also handles negative curvature away from equilibrium;
    4. with residual (skip) layers, either gets the
       [`DepthPreconditioner`][pcscale.DepthPreconditioner], which removes the
       depth-Laplacian part of the conditioning (3× fewer products at depth 32).

    Size enters through the budgets: the activity Hessian's condition number grows like
    L² (science.md §4.6), so Krylov iterations grow like L, and the budgets are set to
    `max(1000, 100·L)` CG steps and `max(200, 20·L)` inner CG steps per Newton step.

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `x`: an example batch (only its shape is used), needed when the first layer is not
      a `pcscale.nn.Linear`.
    - `rtol`, `atol`: the stopping tolerances of the returned solver.

    **Returns:** a solver instance.
    """
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative float, got {value!r}; e.g. {name}=1e-6.")
    depth = model.depth
    if model.num_hidden == 0:
        return GradientDescent(rtol=rtol, atol=atol)
    residual = any(layer.skip for layer in model.layers[1:-1])
    preconditioner = DepthPreconditioner() if residual else None
    # Biases add constants to the predictions: the energy stays quadratic in z, with the
    # same Hessian, so the network without them decides.
    unbiased = eqx.tree_at(
        lambda m: [layer.bias for layer in m.layers], model, [None] * model.depth, is_leaf=lambda v: v is None
    )
    if is_linear(unbiased, input_shape(model, x)):
        return ConjugateGradient(rtol=rtol, atol=atol, max_steps=max(1000, 100 * depth), preconditioner=preconditioner)
    return NewtonKrylov(rtol=rtol, atol=atol, max_inner_steps=max(200, 20 * depth), preconditioner=preconditioner)
