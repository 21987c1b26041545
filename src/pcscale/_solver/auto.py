"""auto_solver: the inference solver pcscale recommends for a model (docs/inference.md)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._model import PCModel
from .._precision import floor_and_start
from .._validation import is_finite_real
from ._base import AbstractInferenceSolver
from ._preconditioner import DepthPreconditioner
from .conjugate_gradient import ConjugateGradient
from .gauss_newton import GAUSS_NEWTON_MAX_OUTPUTS, GaussNewtonPreconditioner
from .gradient_descent import GradientDescent
from .mixed_precision import MixedPrecision
from .newton_krylov import NewtonKrylov


def auto_solver(model: PCModel, x=None, y=None, *, rtol: float = 1e-6, atol: float = 0.0) -> AbstractInferenceSolver:
    r"""The inference solver to use for `model`, by a documented rule:

    1. no hidden layer (depth 1): nothing to solve → `GradientDescent` (stops at once);
    2. a linear or affine network (identity activation, linear layer maps with or without
       biases, MSE output: the energy is quadratic in the activities) →
       [`ConjugateGradient`][pcscale.ConjugateGradient],
       exact in at most n steps and O(√κ·log(1/rtol)) in practice;
    3. any other network → [`NewtonKrylov`][pcscale.NewtonKrylov], globalised by a line
       search, so it also handles negative curvature away from equilibrium, with the
       [`GaussNewtonPreconditioner`][pcscale.GaussNewtonPreconditioner] when a sample has
       at most 64 outputs (its Woodbury solve is d_y × d_y; 3.5–10× less wall-clock than
       the depth preconditioner on the μPC residual MLP of docs/inference.md, and inner
       iterations that do not grow with depth);
    4. with residual (skip) layers, conjugate gradients, and Newton–Krylov for networks
       with more outputs, get the [`DepthPreconditioner`][pcscale.DepthPreconditioner],
       which removes the depth-Laplacian part of the conditioning (3× fewer products at
       depth 32).

    5. precision, when a batch (`x` and `y`) is given: if the requested tolerance lies
       below the rounding floor of the model's dtype
       ([`residual_floor`][pcscale.residual_floor]; typical of float32 networks that are
       wide and deep, e.g. 2e-4 at N = 256, H = 31), the choice is wrapped in
       [`MixedPrecision`][pcscale.MixedPrecision] (iterate in float32 to the floor, then
       polish and certify in float64) when JAX's 64-bit mode is on; with it off, the
       plain choice is returned and `infer` warns that the tolerance cannot be met.
       Without `y` the floor cannot be estimated and only rules 1–4 apply.

    Size enters through the budgets: the activity Hessian's condition number grows like
    L² (docs/background.md §4.6), so Krylov iterations grow like L, and the budgets are set to
    `max(1000, 100·L)` CG steps and `max(200, 20·L)` inner CG steps per Newton step.

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `x`: an example batch, needed when the first layer is not a `pcscale.nn.Linear`
      (only its shape is used, unless `y` is given too).
    - `y`: the batch's targets, to check the tolerance against the dtype's rounding
      floor (rule 5).
    - `rtol`, `atol`: the stopping tolerances of the returned solver.

    **Returns:** a solver instance.
    """
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (is_finite_real(value) and value >= 0):
            raise ValueError(f"`{name}` must be a non-negative finite float, got {value!r}; e.g. {name}=1e-6.")
    from .._linear import input_shape, is_linear  # here: the model's layers import the solvers' package

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
    shape = input_shape(model, x)
    if is_linear(unbiased, shape):
        choice = ConjugateGradient(
            rtol=rtol, atol=atol, max_steps=max(1000, 100 * depth), preconditioner=preconditioner
        )
    else:
        dtype = model.dtype if x is None else jnp.asarray(x).dtype  # integer tokens stay integers
        outputs = math.prod(jax.eval_shape(model.forward_one, jax.ShapeDtypeStruct(shape, dtype)).shape)
        if outputs <= GAUSS_NEWTON_MAX_OUTPUTS:
            preconditioner = GaussNewtonPreconditioner()
        choice = NewtonKrylov(rtol=rtol, atol=atol, max_inner_steps=max(200, 20 * depth), preconditioner=preconditioner)
    if x is None or y is None or not jax.config.read("jax_enable_x64") or jnp.dtype(model.dtype) == jnp.float64:
        return choice
    floor, start = (float(v) for v in floor_and_start(model, x, y))
    if not start > 0 or rtol * start + atol >= floor:
        return choice
    floor = floor / start  # relative, as rtol
    # The float32 phase stops at a tolerance it can reach, with room above the floor.
    first = eqx.tree_at(lambda s: (s.rtol, s.atol), choice, (min(max(10 * floor, 1e-4), 1e-2), 0.0))
    return MixedPrecision(solver=first, rtol=rtol, atol=atol)
