r"""The exact activity equilibrium z* of a linear PC network (docs/background.md §4.2–4.3), by
three independent methods."""

from __future__ import annotations

import abc
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._custom_types import BatchX, BatchY
from .._infer import tree_norm
from .._krylov import conjugate_gradient
from .._model import FULL_PRECISION, PCModel
from .._solution import RESULTS, InferenceSolution, InferenceStats
from .._validation import validated
from ._closed_form import rescaling_of, residuals, solve_rescaled
from ._hessian import DENSE_LIMIT, batch_hvp, summed_gradient
from ._structure import activity_shapes, prepare, transpose_of


def _all_finite(tree) -> Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)] or [True]))


class AbstractLinearSolve(eqx.Module):
    """How [`equilibrium_activities`][pcscale.theory.equilibrium_activities] solves the
    linear system H_z·z* = b."""

    @abc.abstractmethod
    def solve(self, model: PCModel, x: Array, y: Array, z0: tuple) -> tuple[tuple, Array, Array, Array]:
        """From the feedforward activities `z0`: activities, steps, Hessian-vector products used, and whether it succeeded
        (for the direct methods: whether the solution is finite)."""


class Propagation(AbstractLinearSolve):
    r"""Exact, via the rescaling S: at equilibrium the hidden errors are
    ε*_ℓ = G_ℓᵀS⁻¹r (r = y − ŷ of the feedforward pass), so one backward pass of S⁻¹r
    through the transposed layers gives every ε*_ℓ, and one forward pass
    z*_ℓ = f_ℓ(z*_{ℓ−1}) + ε*_ℓ the activities. Cost O(L·(B + d_y)·N²): the cheapest
    exact method at any size."""

    def solve(self, model, x, y, z0):
        batch = x.shape[0]
        hidden, out = activity_shapes(model, tuple(x.shape[1:]))
        scaling = rescaling_of(model, tuple(x.shape[1:]))
        u = solve_rescaled(scaling, residuals(model, x, y)).reshape((batch,) + tuple(out.shape))
        errors = []
        with jax.default_matmul_precision(FULL_PRECISION):
            for index in range(model.depth - 1, 0, -1):
                u = jax.vmap(transpose_of(model.layers[index], hidden[index - 1], index))(u)
                errors.append(u)
            errors.reverse()
            activities, z = [], x
            for layer, error in zip(model.layers[:-1], errors):
                z = jax.vmap(layer)(z) + error
                activities.append(z)
        zero = jnp.zeros((), jnp.int32)
        return tuple(activities), zero, zero, _all_finite(activities)


class DenseSolve(AbstractLinearSolve):
    """Exact, by a Cholesky factorisation of the dense per-sample Hessian H_z (the same
    for every sample, so it is factored once and solved for all B right-hand sides).
    O((N·H)³): small networks only (at most 10 000 activity coordinates per sample)."""

    def solve(self, model, x, y, z0):
        flat0, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], z0))
        if flat0.size > DENSE_LIMIT:
            raise ValueError(
                f"DenseSolve would factor a {flat0.size} × {flat0.size} Hessian (limit "
                f"{DENSE_LIMIT}); use Propagation() or ConjugateGradient()."
            )

        def energy(vector, xi, yi):
            return model.energy_one(unravel(vector), xi, yi)

        with jax.default_matmul_precision(FULL_PRECISION):
            flats = jax.vmap(lambda z: ravel_pytree(z)[0])(z0)
            hessian = jax.hessian(energy)(flat0, x[0], y[0])
            gradients = jax.vmap(jax.grad(energy))(flats, x, y)
            factor = jsl.cho_factor(hessian, lower=True)
            flats = flats - jsl.cho_solve(factor, gradients.T).T
        zero = jnp.zeros((), jnp.int32)
        return jax.vmap(unravel)(flats), zero, zero, jnp.all(jnp.isfinite(flats))


def _check_tolerance(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"`{name}` must be a non-negative float, got {value!r}; e.g. {name}=1e-10.")


class ConjugateGradient(AbstractLinearSolve):
    """Matrix-free: conjugate gradients on Hessian-vector products (forward-over-reverse
    autodiff), from the feedforward state. Needs
    O(√κ·log(1/rtol)) products, κ the condition number of H_z (∝ L², docs/background.md §4.6).

    **Arguments:**

    - `rtol`, `atol`: stop when ‖H_z·δ − b‖ ≤ atol + rtol·‖b‖ (Euclidean norms over the
      whole batch; b is minus the energy gradient at the feedforward state), judged on
      the residual recomputed from the operator at the end. Default `rtol`: 1e-12 in
      float64 and 1e-4 in float32 (where the attainable relative residual floors near
      N·1e-7 under μP readouts); `atol` 0.
    - `max_steps`: iteration budget; default 10 000.
    """

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 10_000

    def __check_init__(self):
        if self.rtol is not None:
            _check_tolerance(self.rtol, "rtol")
        _check_tolerance(self.atol, "atol")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive int, got {self.max_steps!r}.")

    def solve(self, model, x, y, z0):
        with jax.default_matmul_precision(FULL_PRECISION):
            rhs = jax.tree.map(jnp.negative, summed_gradient(model, x, y)(z0))
        zero = jax.tree.map(jnp.zeros_like, z0)
        rtol = self.rtol
        if rtol is None:
            rtol = 1e-12 if z0[0].dtype == jnp.float64 else 1e-4
        delta, steps, products, _, converged = conjugate_gradient(
            batch_hvp(model, x, y, z0), rhs, zero, rtol=rtol, atol=self.atol, max_steps=self.max_steps
        )
        z = jax.tree.map(jnp.add, z0, delta)
        return tuple(z), steps, products, converged


@eqx.filter_jit
def _equilibrium(model, x, y, method):
    x, y = validated(model, x, y)
    if model.num_hidden == 0:
        # Depth 1: no free activities; the energy is λ·𝓛 and already at its minimum.
        method = Propagation()
    batch = x.shape[0]
    gradient = summed_gradient(model, x, y)
    z0 = jax.vmap(model.activities_one)(x)
    with jax.default_matmul_precision(FULL_PRECISION):
        energy0 = jnp.sum(jax.vmap(model.energy_one)(z0, x, y))
        residual0 = tree_norm(gradient(z0))
    z, steps, products, converged = method.solve(model, x, y, z0)
    with jax.default_matmul_precision(FULL_PRECISION):
        energy = jnp.sum(jax.vmap(model.energy_one)(z, x, y))
        residual = tree_norm(gradient(z))
    stats = InferenceStats(
        energy=energy / batch,
        initial_energy=energy0 / batch,
        residual=residual,
        initial_residual=residual0,
        relative_residual=jnp.where(residual0 > 0, residual / jnp.where(residual0 > 0, residual0, 1.0), 0.0),
        steps=steps,
        grad_evals=jnp.asarray(2, jnp.int32),  # the residual checks at z0 and z*
        hvp_evals=jnp.asarray(products, jnp.int32),
        result=RESULTS.where(
            converged,
            RESULTS.converged,
            RESULTS.where(jnp.isfinite(energy), RESULTS.max_steps, RESULTS.diverged),
        ),
    )
    return InferenceSolution(activities=z, stats=stats)


def equilibrium_activities(
    model: PCModel, x: BatchX, y: BatchY, *, method: AbstractLinearSolve | None = None, dtype=None
) -> InferenceSolution:
    r"""The exact minimiser z* of the energy of a linear PC network over its activities.

    Per sample the energy is quadratic with Hessian H_z (block-tridiagonal, the same for
    every sample), so z* solves H_z·z* = b (docs/background.md §4.3). Three methods:
    [`Propagation`][pcscale.theory.Propagation] (default; exact through S, the cheapest),
    [`DenseSolve`][pcscale.theory.DenseSolve] (dense Cholesky, small networks) and
    [`ConjugateGradient`][pcscale.theory.ConjugateGradient] (matrix-free).

    **Arguments:**

    - `model`: a linear [`PCModel`][pcscale.PCModel] (φ = identity, no biases, MSE).
    - `x`, `y`: a batch, as for [`infer`][pcscale.infer].
    - `method`: an [`AbstractLinearSolve`][pcscale.theory.AbstractLinearSolve].
    - `dtype`: compute in this dtype (e.g. `jnp.float64`); default the model's.

    **Returns:** an [`InferenceSolution`][pcscale.InferenceSolution], like
    [`infer`][pcscale.infer]'s: the activities, and stats with the energy at z* (= F*),
    the residual ‖∇_z Σ_i F_i‖ measured at z*, the iterations and Hessian-vector products
    used (0 for the direct methods), and `result`: `max_steps` if CG ran out of budget,
    `diverged` if the solution is not finite (e.g. a singular S in a degenerate model).
    """
    if method is None:
        method = Propagation()
    if not isinstance(method, AbstractLinearSolve):
        raise TypeError(
            f"`method` must be a pcscale.theory linear solve (Propagation(), DenseSolve() or "
            f"ConjugateGradient()), got {method!r}."
        )
    model, x, y = prepare(model, x, y, dtype, "equilibrium_activities")
    return _equilibrium(model, x, y, method)
