r"""The exact activity equilibrium z* of a linear PC network (docs/background.md §4.2–4.3), by
three independent methods."""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax.tree_utils as otu
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._custom_types import BatchX, BatchY
from .._linear import activity_shapes, transpose_of
from .._model import PCModel
from .._precise import precise_jit
from .._solution import RESULTS, InferenceSolution, InferenceStats
from .._validation import is_finite_real, validated
from ._closed_form import rescaling_of, residuals, solve_rescaled
from ._hessian import DENSE_LIMIT, batch_hvp, summed_gradient
from ._structure import prepare


def _all_finite(tree) -> Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)] or [True]))


class AbstractLinearSolve(eqx.Module):
    """How [`equilibrium_activities`][pcscale.theory.equilibrium_activities] solves the
    linear system H_z·z* = b."""

    @abc.abstractmethod
    def solve(self, model: PCModel, x: Array, y: Array, z0: tuple) -> tuple[tuple, Array, Array, Array]:
        """From the feedforward activities `z0`: activities, steps, Hessian-vector products
        used, and whether it succeeded (for the direct methods: whether the solution is
        finite)."""


class Propagation(AbstractLinearSolve):
    r"""Exact, via the rescaling S: at equilibrium the hidden errors are
    ε*_ℓ = Π_ℓ⁻¹G_ℓᵀS⁻¹r (r = y − ŷ of the feedforward pass; Π_ℓ the layer's error
    precision, I unless set), so one backward pass of S⁻¹r
    through the transposed layers gives every ε*_ℓ, and one forward pass
    z*_ℓ = f_ℓ(z*_{ℓ−1}) + ε*_ℓ the activities. Cost O(L·(B + d_y)·N²): the cheapest
    exact method at any size."""

    def solve(self, model, x, y, z0):
        batch = x.shape[0]
        hidden, out = activity_shapes(model, tuple(x.shape[1:]))
        scaling = rescaling_of(model, tuple(x.shape[1:]))
        u = solve_rescaled(scaling, residuals(model, x, y)).reshape((batch,) + tuple(out.shape))
        errors = []
        for index in range(model.depth - 1, 0, -1):
            u = jax.vmap(transpose_of(model.layers[index], hidden[index - 1], index))(u)
            # ε*_ℓ = Π_ℓ⁻¹G_ℓᵀS⁻¹r: the propagated u_ℓ = G_ℓᵀS⁻¹r scaled by the layer's
            # inverse precision (1 unless set).
            precision = model.layers[index - 1].error_precision(tuple(hidden[index - 1].shape))
            errors.append(u / jnp.broadcast_to(precision, u.shape))
        errors.reverse()
        activities, z = [], x
        for layer, error in zip(model.layers[:-1], errors, strict=True):  # one error per hidden layer
            z = jax.vmap(layer)(z) + error
            activities.append(z)
        zero = jnp.zeros((), jnp.int32)
        return tuple(activities), zero, zero, _all_finite(activities)


class DenseCholesky(AbstractLinearSolve):
    """Exact, by a Cholesky factorisation (Lineax's `Cholesky`) of the dense per-sample
    Hessian H_z (the same for every sample, so it is factored once and solved for all B
    right-hand sides). O((N·H)³): small networks only (at most 10 000 activity
    coordinates per sample). Formerly `DenseSolve`, a deprecated alias for one release."""

    def solve(self, model, x, y, z0):
        flat0, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], z0))
        if flat0.size > DENSE_LIMIT:
            raise ValueError(
                f"DenseCholesky would factor a {flat0.size} × {flat0.size} Hessian (limit "
                f"{DENSE_LIMIT}); use Propagation() or LinearCG()."
            )

        def energy(vector, xi, yi):
            return model.energy_one(unravel(vector), xi, yi)

        flats = jax.vmap(lambda z: ravel_pytree(z)[0])(z0)
        matrix = jax.hessian(energy)(flat0, x[0], y[0])
        hessian = lx.MatrixLinearOperator(matrix, lx.positive_semidefinite_tag)
        gradients = jax.vmap(jax.grad(energy))(flats, x, y)
        cholesky = lx.Cholesky()
        factor = cholesky.init(hessian, {})  # once, for every sample's right-hand side

        def solve(g):
            return lx.linear_solve(hessian, g, cholesky, state=factor, throw=False).value

        flats = flats - jax.vmap(solve)(gradients)
        zero = jnp.zeros((), jnp.int32)
        return jax.vmap(unravel)(flats), zero, zero, jnp.all(jnp.isfinite(flats))


# Lineax's CG recomputes its residual from the operator every this many steps.
_STABILISE_EVERY = 10


def _disarmed_breakdown_test(structure, size: int) -> lx.AbstractLinearOperator:
    """The preconditioner M⁻¹ = 2^k·I with 2^k ≥ 200·`size`. Lineax's CG declares a
    breakdown (α = NaN) once pᵀA·p ≤ 200·eps·n·rᵀM⁻¹r: at n ≳ 10⁵ float32 coordinates
    that rejects healthy steps of PC Hessians, whose λ_min falls like 1/L² (a float32
    network of width 256, depth 32 and batch 16 fails at the first step). A scalar
    preconditioner leaves the CG iterates unchanged (a power of two scales them exactly;
    measured, the same steps and activities within 2e-14 in float64), while the test
    becomes pᵀA·p ≲ eps·rᵀr: a true breakdown only."""
    scale = 2.0 ** math.ceil(math.log2(200 * max(size, 1)))
    return lx.FunctionLinearOperator(lambda r: jax.tree.map(lambda u: scale * u, r), structure,
                                     lx.positive_semidefinite_tag)


class LinearCG(AbstractLinearSolve):
    """Matrix-free: conjugate gradients (Lineax's `CG`) on Hessian-vector products
    (forward-over-reverse autodiff), from the feedforward state. Needs
    O(√κ·log(1/rtol)) products, κ the condition number of H_z (∝ L², docs/background.md §4.6).
    Formerly `theory.ConjugateGradient`, a deprecated alias for one release (the name
    now belongs to the inference solver [`pcscale.ConjugateGradient`][pcscale.ConjugateGradient]).

    **Arguments:**

    - `rtol`, `atol`: stop when ‖H_z·δ − b‖ ≤ atol + rtol·‖b‖ (Euclidean norms over the
      whole batch; b is minus the energy gradient at the feedforward state), judged on
      the residual recomputed from the operator at the end. Default `rtol`: 1e-12 in
      float64 and 1e-4 in float32 (where the attainable relative residual floors near
      N·1e-7 under μP readouts); `atol` 0.
    - `max_steps`: iteration budget; default 10 000.

    The products reported are the iterations, Lineax's recomputation of the residual
    every 10 steps, its initial residual and the final check.
    """

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 10_000

    def __check_init__(self):
        for name, value in (("rtol", self.rtol), ("atol", self.atol)):
            if value is not None and not (is_finite_real(value) and value >= 0):
                raise ValueError(
                    f"`{name}` must be a non-negative finite float, got {value!r}; e.g. {name}=1e-10."
                )
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive int, got {self.max_steps!r}; e.g. max_steps=10000.")

    def solve(self, model, x, y, z0):
        rhs = jax.tree.map(jnp.negative, summed_gradient(model, x, y)(z0))
        rtol = self.rtol
        if rtol is None:
            rtol = 1e-12 if z0[0].dtype == jnp.float64 else 1e-4
        # Lineax scales its tolerance element by element (atol + rtol·|b_i|), which never
        # passes on PC right-hand sides (zero on every layer but the top one at the
        # feedforward state): the whole tolerance goes into `atol`, on the Euclidean norm.
        threshold = self.atol + rtol * optx.two_norm(rhs)
        hvp = batch_hvp(model, x, y, z0)
        structure = jax.eval_shape(lambda: rhs)
        operator = lx.FunctionLinearOperator(hvp, structure, lx.positive_semidefinite_tag)
        solver = lx.CG(rtol=0.0, atol=threshold, norm=optx.two_norm, stabilise_every=_STABILISE_EVERY,
                       max_steps=self.max_steps)
        size = sum(leaf.size for leaf in jax.tree.leaves(rhs))
        options = {"preconditioner": _disarmed_breakdown_test(structure, size)}
        solution = lx.linear_solve(operator, rhs, solver, options=options, throw=False)
        delta, steps = solution.value, solution.stats["num_steps"]
        residual = optx.two_norm(jax.tree.map(jnp.subtract, rhs, hvp(delta)))
        products = steps + steps // _STABILISE_EVERY + 2
        z = jax.tree.map(jnp.add, z0, delta)
        return tuple(z), steps, products, residual <= threshold


@precise_jit
def _equilibrium(model, x, y, method):
    x, y = validated(model, x, y)
    if model.num_hidden == 0:
        # Depth 1: no free activities; the energy is λ·𝓛 and already at its minimum.
        method = Propagation()
    batch = x.shape[0]
    gradient = summed_gradient(model, x, y)
    z0 = jax.vmap(model.activities_one)(x)
    energy0 = jnp.sum(jax.vmap(model.energy_one)(z0, x, y))
    residual0 = otu.tree_norm(gradient(z0))
    z, steps, products, converged = method.solve(model, x, y, z0)
    energy = jnp.sum(jax.vmap(model.energy_one)(z, x, y))
    residual = otu.tree_norm(gradient(z))
    stats = InferenceStats.assemble(
        energy=energy / batch, initial_energy=energy0 / batch, residual=residual, initial_residual=residual0,
        steps=steps, grad_evals=jnp.asarray(2, jnp.int32),  # the residual checks at z0 and z*
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
    [`DenseCholesky`][pcscale.theory.DenseCholesky] (dense Cholesky, small networks) and
    [`LinearCG`][pcscale.theory.LinearCG] (matrix-free).

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
            f"`method` must be a pcscale.theory linear solve (Propagation(), DenseCholesky() or "
            f"LinearCG()), got {method!r}."
        )
    model, x, y = prepare(model, x, y, dtype, "equilibrium_activities")
    return _equilibrium(model, x, y, method)
