"""Bidirectional and generative PC: bottom-up and top-down maps on one set of activities,
with the data at the bottom, the label (or a latent) at the top, and either end clamped
or free."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from ._custom_types import Activities
from ._infer import solve_activities
from ._model import PCModel
from ._precise import precise_jit
from ._single_step import _check_optimiser
from ._solution import RESULTS, InferenceStats
from ._solver import AbstractInferenceSolver, ErrorCoordinates, MixedPrecision
from ._solver._base import with_traced_numbers
from ._solver._preconditioner import AbstractKrylovSolver
from ._step import guarded_update
from ._validation import as_float_array, check_finite, check_opt_state, is_finite_real


def _weight(value, name: str) -> float:
    if isinstance(value, bool) or not (is_finite_real(value) and value >= 0):
        raise ValueError(f"`{name}` must be a non-negative finite float, got {value!r}; e.g. {name}=1.0.")
    return float(value)


class BidirectionalModel(eqx.Module):
    r"""A bidirectional PC network (bPC; Oliviers, Tang and Bogacz 2025), and with
    `up=None` a generative PC network.

    States z_0 … z_L: the data at the bottom (z_0), hidden activities z_1 … z_{L−1}, and
    the label or top latent at the top (z_L). Bottom-up maps f_l (z_{l−1} → z_l) and
    top-down maps g_l (z_l → z_{l−1}) share them in one energy per sample,

    $$F = \frac{\alpha_d}{2}\sum_{l=1}^{L}\|z_l - f_l(z_{l-1})\|^2
        + \frac{\alpha_g}{2}\sum_{l=1}^{L}\|z_{l-1} - g_l(z_l)\|^2
        + \frac{\pi_0}{2}\|z_L\|^2,$$

    the last term a Gaussian prior N(0, I/π_0) on the top (none when π_0 = 0). Either end
    may be clamped or free ([`infer_bidirectional`][pcscale.infer_bidirectional]):
    clamp both to train, the bottom to classify (the top settles on a prediction) or
    infer latents, the top to generate. α_g = 0 is discriminative PC, α_d = 0 (no `up`)
    generative PC.

    **Arguments:**

    - `up`: a [`PCModel`][pcscale.PCModel] from the data to the top (its layers are the
      f_l; its output energy and precision are unused), or None.
    - `down`: a PCModel from the top to the data (its layers, in order, are g_L … g_1),
      or None. Both, if given, must have the same depth L.
    - `disc_weight`: α_d ≥ 0 (0 without `up`). Default 1.
    - `gen_weight`: α_g ≥ 0 (0 without `down`). Default 1.
    - `prior_precision`: π_0 ≥ 0. Default 0.
    """

    up: PCModel | None
    down: PCModel | None
    disc_weight: float = eqx.field(static=True, default=1.0)
    gen_weight: float = eqx.field(static=True, default=1.0)
    prior_precision: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        for name in ("up", "down"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, PCModel):
                raise TypeError(f"`{name}` must be a PCModel or None, got {type(value).__name__}.")
        if self.up is None and self.down is None:
            raise ValueError("at least one of `up` and `down` must be a PCModel; e.g. down=pcscale.nn.mlp(...).")
        if self.up is not None and self.down is not None and self.up.depth != self.down.depth:
            raise ValueError(
                f"`up` and `down` must have the same depth L, got {self.up.depth} and {self.down.depth}."
            )
        for name, maps in (("disc_weight", self.up), ("gen_weight", self.down)):
            value = _weight(getattr(self, name), name)
            if maps is None and value != 0:
                raise ValueError(f"`{name}` must be 0 without the maps it weights, got {value!r}.")
        _weight(self.prior_precision, "prior_precision")
        for name in ("up", "down"):
            maps = getattr(self, name)
            if maps is not None and not maps.unit_precisions:
                raise ValueError(
                    f"`{name}` carries per-layer precisions or learnt variances, which the bidirectional "
                    "energy does not use (its terms are weighted by disc_weight and gen_weight); build it "
                    "without them."
                )

    @property
    def depth(self) -> int:
        """L, the number of maps in each direction."""
        maps = self.up if self.up is not None else self.down
        assert maps is not None  # __check_init__
        return maps.depth

    @property
    def dtype(self):
        return (self.up if self.up is not None else self.down).dtype  # type: ignore[union-attr]

    def energy_one(self, states: Activities) -> Float[Array, ""]:
        """F of one sample, from all its states z_0 … z_L (no batch axis)."""
        total = 0.5 * self.prior_precision * jnp.sum(states[-1] ** 2)
        depth = len(states) - 1
        if self.up is not None and self.disc_weight:
            total = total + 0.5 * self.disc_weight * sum(
                jnp.sum((states[k] - self.up.layers[k - 1](states[k - 1])) ** 2) for k in range(1, depth + 1))
        if self.down is not None and self.gen_weight:
            total = total + 0.5 * self.gen_weight * sum(
                jnp.sum((states[k - 1] - self.down.layers[depth - k](states[k])) ** 2) for k in range(1, depth + 1))
        return total

    def energy(self, states: Activities) -> Float[Array, ""]:
        """The batch mean of F, from batched states z_0 … z_L."""
        return jnp.mean(jax.vmap(self.energy_one)(tuple(states)))

    def start_one(self, bottom: Array | None, top: Array | None, top_shape: tuple[int, ...]) -> Activities:
        """The states inference starts from, for one sample: a bottom-up pass from a
        clamped bottom (where there are bottom-up maps), else a top-down pass from the
        clamped top, or from the prior's mean 0 at the top."""
        depth = self.depth
        if bottom is not None and self.up is not None:
            states = [bottom]
            for layer in self.up.layers:
                states.append(layer(states[-1]))
            if top is not None:
                states[-1] = top
            return tuple(states)
        down = self.down
        assert down is not None  # without `up`, `down` is set
        states = [top if top is not None else jnp.zeros(top_shape, self.dtype)]
        for layer in down.layers:
            states.append(layer(states[-1]))
        states.reverse()
        if bottom is not None:
            states[0] = bottom
        assert len(states) == depth + 1
        return tuple(states)


class _Clamped(eqx.Module):
    """The energy of a BidirectionalModel as a function of its free states, for the one
    inference loop: `x` carries the clamped bottom and `y` the clamped top (placeholders
    for a free end)."""

    model: BidirectionalModel
    bottom_free: bool = eqx.field(static=True)
    top_free: bool = eqx.field(static=True)

    def full(self, free: Activities, x: Array, y: Array) -> Activities:
        free = tuple(free)
        bottom, rest = (free[0], free[1:]) if self.bottom_free else (x, free)
        hidden, top = (rest[:-1], rest[-1]) if self.top_free else (rest, y)
        return (bottom,) + tuple(hidden) + (top,)

    def free(self, states: Activities) -> Activities:
        states = tuple(states)
        return (states[:1] if self.bottom_free else ()) + states[1:-1] + (states[-1:] if self.top_free else ())

    def energy_one(self, z: Activities, x: Array, y: Array) -> Float[Array, ""]:
        return self.model.energy_one(self.full(z, x, y))

    def activities_one(self, x: Array) -> Activities:  # pragma: no cover - the loop starts from z0
        raise NotImplementedError("bidirectional inference always passes its starting state")


class BidirectionalSolution(eqx.Module):
    """What [`infer_bidirectional`][pcscale.infer_bidirectional] returns: every state
    z_0 … z_L (batched; the clamped ends as given) and the solve's
    [`InferenceStats`][pcscale.InferenceStats] (its tolerance relative to the starting
    state's residual). `bottom` is z_0 (a reconstruction when it was free), `top` z_L (a
    prediction or inferred latent when free)."""

    states: Activities
    stats: InferenceStats

    @property
    def bottom(self) -> Array:
        return self.states[0]

    @property
    def top(self) -> Array:
        return self.states[-1]


def _check_solver(solver) -> None:
    if not isinstance(solver, AbstractInferenceSolver):
        raise TypeError(f"`solver` must be a pcscale inference solver, got {type(solver).__name__}.")
    if isinstance(solver, (MixedPrecision, ErrorCoordinates)) or (
        isinstance(solver, AbstractKrylovSolver) and solver.preconditioner is not None
    ):
        raise ValueError(
            f"`solver` must be a plain solver for a bidirectional model, got {type(solver).__name__} with "
            "structure it reads from a PCModel (a preconditioner, error coordinates or mixed precision); e.g. "
            "pcscale.NewtonKrylov() or pcscale.GradientDescent(step_size=0.1)."
        )


def _solve(model, bottom, top, solver, top_shape: tuple[int, ...], batch: int) -> BidirectionalSolution:
    """The solve for validated inputs (callable inside jit)."""
    clamped = _Clamped(model, bottom is None, top is None)

    def start_one(b, t):
        return model.start_one(b, t, top_shape)

    axes = (None if bottom is None else 0, None if top is None else 0)
    start = jax.vmap(start_one, in_axes=axes, axis_size=batch)(bottom, top)
    x = start[0] if bottom is None else bottom
    y = start[-1] if top is None else top
    solution = solve_activities(clamped, x, y, solver, clamped.free(start), None, relative_to_start=True)
    return BidirectionalSolution(clamped.full(solution.activities, x, y), solution.stats)


@precise_jit
def _infer(model, bottom, top, solver, top_shape, batch):
    return _solve(model, bottom, top, solver, top_shape, batch)


def _inputs(model: BidirectionalModel, x, y):
    dtype = model.dtype
    x = None if x is None else check_finite(as_float_array(x, "x").astype(dtype), "x")
    y = None if y is None else check_finite(as_float_array(y, "y").astype(dtype), "y")
    if x is not None and y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(f"`x` and `y` must have the same batch size, got {x.shape[0]} and {y.shape[0]}.")
    return x, y


def infer_bidirectional(
    model: BidirectionalModel,
    x: Array | None = None,
    y: Array | None = None,
    *,
    solver: AbstractInferenceSolver,
    top_shape: tuple[int, ...] | None = None,
) -> BidirectionalSolution:
    """Minimise a [`BidirectionalModel`][pcscale.BidirectionalModel]'s energy over its
    free states: the hidden ones, and the bottom when `x` is None (generation), the top
    when `y` is None (classification, or latent inference).

    The solve starts from a bottom-up pass from `x` where the model has bottom-up maps,
    else from a top-down pass from `y` (or from 0 at the top), and its tolerance is
    relative to the residual there. It is certified like every solve, by any solver that
    needs no PCModel structure (no preconditioner, error coordinates or mixed precision).

    **Arguments:**

    - `model`: a BidirectionalModel.
    - `x`: the data (batch on axis 0), clamped at the bottom; None to leave it free.
    - `y`: the label or top latent (batch on axis 0), clamped at the top; None to leave it
      free. At least one of `x` and `y` must be given.
    - `solver`: e.g. `pcscale.NewtonKrylov()`.
    - `top_shape`: the per-sample shape of the top, needed only when `y` is None and the
      model has no bottom-up maps (e.g. `(latent_dim,)`).

    **Returns:** a [`BidirectionalSolution`][pcscale.BidirectionalSolution].
    """
    if not isinstance(model, BidirectionalModel):
        raise TypeError(f"`model` must be a pcscale.BidirectionalModel, got {type(model).__name__}.")
    _check_solver(solver)
    if x is None and y is None:
        raise ValueError("clamp at least one end: pass `x` (the data) or `y` (the label or top latent).")
    x, y = _inputs(model, x, y)
    if y is not None:
        shape = tuple(y.shape[1:])
    elif model.up is not None:
        assert x is not None
        shape = tuple(jax.eval_shape(model.up.forward_one, jax.ShapeDtypeStruct(x.shape[1:], model.dtype)).shape)
    elif top_shape is not None:
        shape = tuple(top_shape)
    else:
        raise ValueError(
            "`top_shape` is needed to infer a free top without bottom-up maps: pass the latent's per-sample "
            "shape, e.g. top_shape=(8,)."
        )
    size = (x if x is not None else y).shape[0]  # type: ignore[union-attr]
    return _infer(model, x, y, with_traced_numbers(solver), shape, int(size))


class BidirectionalStepMetrics(eqx.Module):
    """Metrics of one [`bpc_step`][pcscale.bpc_step], at the weights before it: the
    batch-mean `energy` at the equilibrium, `grad_norm`, `updated`, and the solve's
    `inference` stats."""

    energy: Float[Array, ""]
    grad_norm: Float[Array, ""]
    updated: jax.Array
    inference: InferenceStats


@precise_jit
def _bpc_step(model, opt_state, x, y, optimiser, solver):
    check_opt_state(model, optimiser, opt_state)
    found = _solve(model, x, y, solver, tuple(y.shape[1:]), x.shape[0])
    states = jax.lax.stop_gradient(found.states)
    energy, grads = eqx.filter_value_and_grad(lambda m: m.energy(states))(model)
    ok = jnp.isfinite(energy) & (found.stats.result != RESULTS.diverged)
    model, opt_state, grad_norm, accept = guarded_update(model, opt_state, grads, optimiser, ok)
    return model, opt_state, BidirectionalStepMetrics(energy, grad_norm, accept, found.stats), found.states


def bpc_step(
    model: BidirectionalModel,
    opt_state: PyTree,
    x: Array,
    y: Array,
    *,
    optimiser: optax.GradientTransformation,
    solver: AbstractInferenceSolver,
) -> tuple[BidirectionalModel, PyTree, BidirectionalStepMetrics, Activities]:
    """One training step of a [`BidirectionalModel`][pcscale.BidirectionalModel] with the
    data `x` and the label `y` clamped: the equilibrium of the hidden states, then an
    optimiser update with the weight gradient of the batch-mean energy there (each
    term's gradient reaches only its own maps: the local rule). Refused, with
    `metrics.updated` False, after a diverged solve or a non-finite update.

    **Returns:** `(model, opt_state, BidirectionalStepMetrics, states)`.
    """
    if not isinstance(model, BidirectionalModel):
        raise TypeError(f"`model` must be a pcscale.BidirectionalModel, got {type(model).__name__}.")
    _check_optimiser(optimiser)
    _check_solver(solver)
    data, label = _inputs(model, x, y)
    if data is None or label is None:
        raise ValueError("`bpc_step` trains with both ends clamped: pass the data `x` and the label `y`.")
    return _bpc_step(model, opt_state, data, label, optimiser, with_traced_numbers(solver))


def ancestral_sample(
    model: BidirectionalModel, key: Array, num_samples: int, top_shape: tuple[int, ...], *, noise: bool = True
) -> Activities:
    """Samples of a [`BidirectionalModel`][pcscale.BidirectionalModel]'s generative side,
    drawn top-down: z_L ~ N(0, I/π_0), then z_{l−1} = g_l(z_l) + ξ_l with
    ξ_l ~ N(0, I/α_g) (the Gaussians the energy's top-down terms and prior are the negative
    log-densities of), or without the ξ_l when `noise` is False.

    **Arguments:** the model (with top-down maps, α_g > 0 and π_0 > 0), a JAX PRNG `key`,
    the number of samples, the per-sample shape of the top (e.g. `(latent_dim,)`).

    **Returns:** the states z_0 … z_L, each with a leading sample axis; z_0 are the
    generated data.
    """
    if not isinstance(model, BidirectionalModel) or model.down is None:
        raise TypeError("`model` must be a pcscale.BidirectionalModel with top-down maps (`down`).")
    if not (model.gen_weight > 0 and model.prior_precision > 0):
        raise ValueError(
            f"ancestral sampling needs gen_weight > 0 and prior_precision > 0 (the variances 1/α_g and "
            f"1/π_0), got {model.gen_weight!r} and {model.prior_precision!r}."
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")
    return _ancestral(model, key, int(num_samples), tuple(top_shape), bool(noise))


@precise_jit
def _ancestral(model, key, num_samples, top_shape, noise):
    down = model.down
    keys = jax.random.split(key, down.depth + 1)
    dtype = model.dtype
    top = jax.random.normal(keys[0], (num_samples,) + top_shape, dtype) / jnp.sqrt(model.prior_precision)
    states = [top]
    for layer, k in zip(down.layers, keys[1:], strict=True):
        mean = jax.vmap(layer)(states[-1])
        shake = jax.random.normal(k, mean.shape, dtype) / jnp.sqrt(model.gen_weight) if noise else 0.0
        states.append(mean + shake)
    states.reverse()
    return tuple(states)
