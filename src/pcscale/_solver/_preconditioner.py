"""Preconditioners for the Krylov inference solvers, and the base those solvers share."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx

from .._custom_types import Activities, EnergyModel
from .._model import PCModel
from ._base import AbstractInferenceSolver


class Preconditioning(eqx.Module):
    """A preconditioner built at one point: `apply(r)` = M⁻¹·r, what building it cost
    (`setup_passes`, linear passes through the network), what each application costs
    (`passes_per_apply`), and the `state` to build the next one from (None for a
    preconditioner without memory)."""

    apply: Callable[[Activities], Activities]
    setup_passes: Any = 0
    passes_per_apply: int = eqx.field(static=True, default=0)
    state: Any = None


class AbstractPreconditioner(eqx.Module):
    """An approximation M of the per-sample activity Hessian whose inverse is cheap:
    `apply(model, r)` returns M⁻¹·r for a stack of per-sample activity vectors r.

    A preconditioner that depends on the point (such as
    [`GaussNewtonPreconditioner`][pcscale.GaussNewtonPreconditioner]) sets
    `point_dependent = True` and overrides `at(model, fn, z)`, which builds it at the
    activities z (with `fn`, the energy being solved); Newton–Krylov rebuilds it at
    every Newton step."""

    point_dependent: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(self, model: PCModel, r: Activities) -> Activities:
        """M⁻¹·r, with r shaped like the batched activities."""

    def init_state(self, model: PCModel, fn, z: Activities) -> Any:
        """What the preconditioner remembers between Newton steps, before the first
        (arrays only; None by default)."""
        return None

    def at(self, model: PCModel, fn, z: Activities, state: Any = None) -> Preconditioning:
        """The preconditioner at the activities `z`, from the `state` the previous one
        left (by default the same everywhere)."""
        return Preconditioning(lambda r: self.apply(model, r))


class DepthPreconditioner(AbstractPreconditioner):
    r"""The activity Hessian of the network with every branch removed: only the skip
    connections remain, so z_ℓ meets z_{ℓ−1} and z_{ℓ+1} through s_ℓ, s_{ℓ+1} ∈ {0, 1}
    and M = T ⊗ I with T the L−1 × L−1 tridiagonal matrix

    T_ℓℓ = 1 + s_{ℓ+1}²,  T_{ℓ,ℓ+1} = T_{ℓ+1,ℓ} = −s_{ℓ+1}

    (s_L of the readout taken as 0). For a residual network T is the depth Laplacian
    (Dirichlet at the input, Neumann at the top), whose condition number grows like L²:
    it is the part of the activity Hessian that makes deep PC inference ill-conditioned
    (docs/background.md §4.6), while the branches, scaled by L^−α, perturb it. Applying T⁻¹ is
    a tridiagonal (Thomas) solve along depth, per neuron: O(L·N·B), negligible next to a
    Hessian-vector product. For a network without skips T = I and this changes nothing.

    T's entries are known from the model's structure before tracing, so the solve is
    unrolled with scalar coefficients and skips every zero coupling; it works on layers
    of any shapes (only coupled layers, which a skip makes alike, are combined).
    """

    def apply(self, model, r):
        r = tuple(r)
        hidden = len(r)
        couple = [bool(model.layers[index + 1].skip) if index + 1 < hidden else False for index in range(hidden)]
        diagonal = [1.0 + (1.0 if c else 0.0) for c in couple]
        # off[ℓ] couples z_ℓ and z_{ℓ+1}: −1 where layer ℓ+1 (0-based: index ℓ+1) skips.
        off = [-1.0 if couple[index] else 0.0 for index in range(hidden - 1)]
        # Thomas algorithm with scalar coefficients on array right-hand sides.
        c_prime, d_prime = [], []
        for index in range(hidden):
            lower = off[index - 1] if index > 0 else 0.0
            denominator = diagonal[index] - (lower * c_prime[index - 1] if index > 0 else 0.0)
            c_prime.append(off[index] / denominator if index < hidden - 1 else 0.0)
            rhs = r[index] - lower * d_prime[index - 1] if index > 0 and lower != 0.0 else r[index]
            d_prime.append(rhs / denominator)
        solution = [None] * hidden
        solution[-1] = d_prime[-1]
        for index in range(hidden - 2, -1, -1):
            upper = c_prime[index]
            solution[index] = d_prime[index] - upper * solution[index + 1] if upper != 0.0 else d_prime[index]
        return tuple(solution)


def _identity(r: Activities) -> Activities:
    return r


def _structured(model: EnergyModel) -> PCModel:
    """`model` as the PCModel a preconditioner reads its structure from."""
    if not isinstance(model, PCModel):
        raise TypeError(f"preconditioners read a PCModel's layers; got {type(model).__name__}.")
    return model


class AbstractKrylovSolver(AbstractInferenceSolver):
    """A solver whose iterations are Krylov (conjugate-gradient) steps on the activity
    Hessian, and so can be preconditioned: the keyword-only `preconditioner` is None
    (default) or an [`AbstractPreconditioner`][pcscale.AbstractPreconditioner]."""

    preconditioner: AbstractPreconditioner | None = eqx.field(default=None, kw_only=True)

    def __check_init__(self):
        if self.preconditioner is not None and not isinstance(self.preconditioner, AbstractPreconditioner):
            raise TypeError(
                f"`preconditioner` must be None or a pcscale.AbstractPreconditioner, got "
                f"{type(self.preconditioner).__name__}; e.g. pcscale.DepthPreconditioner()."
            )

    def preconditioning(self, model: EnergyModel) -> Callable[[Activities], Activities]:
        """r ↦ M⁻¹·r for `model` (the identity without a preconditioner), for a
        preconditioner that does not depend on the point."""
        preconditioner = self.preconditioner
        if preconditioner is None:
            return _identity
        pc_model = _structured(model)
        return lambda r: preconditioner.apply(pc_model, r)

    def preconditioning_at(self, model: EnergyModel, fn, z: Activities, state: Any = None) -> Preconditioning:
        """The [`Preconditioning`][pcscale.Preconditioning] at the activities `z`."""
        if self.preconditioner is None:
            return Preconditioning(_identity)
        return self.preconditioner.at(_structured(model), fn, z, state)
