"""Weight optimisers that apply the per-weight scales the parameterisation put on the
model. PC and BP twins must be built from the same configuration (one factory)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from typing import cast

import equinox as eqx
import jax
import optax

from ._model import PCModel
from ._parameterisation import Scaling
from ._validation import is_finite_real


def _check_rate(value, name: str) -> None:
    if not (is_finite_real(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite float, got {value!r}; e.g. {name}=1e-3.")


def _check_non_negative(value, name: str) -> None:
    if not (is_finite_real(value) and value >= 0):
        raise ValueError(
            f"`{name}` must be a non-negative finite float, got {value!r}; use 0 to disable it."
        )


def _check_decay_rate(value, name: str, example: str) -> None:
    """A momentum or moment-decay rate in [0, 1): 1 or more never forgets a gradient."""
    if not (is_finite_real(value) and 0 <= value < 1):
        raise ValueError(f"`{name}` must be a finite float in [0, 1), got {value!r}; e.g. {name}={example}.")


class AbstractOptimiser(eqx.Module):
    """A weight-optimiser configuration. `make_optimiser` groups the model's parameters
    by their scales and builds one optax transformation per group."""

    @abc.abstractmethod
    def group(self, scaling: Scaling) -> tuple[float, ...]:
        """The scale factors this optimiser reads from a parameter's scaling."""

    @abc.abstractmethod
    def transform(self, *factors: float) -> optax.GradientTransformation:
        """The optax transformation for one group of parameters."""


class SGD(AbstractOptimiser):
    """SGD (optionally with momentum and coupled weight decay). The raw-weight rate is
    `learning_rate`·`Scaling.sgd_lr_scale` (e.g. η·γ0²·N under μPC); the decay is
    `weight_decay`·`Scaling.weight_decay_scale`.

    **Arguments:** `learning_rate` (η), `momentum` (default none), `nesterov`,
    `weight_decay` (default 0).
    """

    learning_rate: float
    momentum: float | None = None
    nesterov: bool = False
    weight_decay: float = 0.0

    def __check_init__(self):
        _check_rate(self.learning_rate, "learning_rate")
        if self.momentum is not None:
            _check_decay_rate(self.momentum, "momentum", "0.9 (or None for plain SGD)")
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"`nesterov` must be a bool, got {self.nesterov!r}; e.g. nesterov=True.")
        _check_non_negative(self.weight_decay, "weight_decay")

    def group(self, scaling):
        return (scaling.sgd_lr_scale, scaling.weight_decay_scale)

    def transform(self, lr_scale, wd_scale):
        decay = self.weight_decay * wd_scale
        return optax.chain(
            optax.add_decayed_weights(decay) if decay else optax.identity(),
            optax.sgd(self.learning_rate * lr_scale, momentum=self.momentum, nesterov=self.nesterov),
        )


class Adam(AbstractOptimiser):
    """Adam. The raw-weight rate is `learning_rate`·`Scaling.adam_lr_scale`, ε is
    `eps`·`Scaling.adam_eps_scale`; weight decay is coupled L2 (κ·W added to the
    gradient before Adam, scaled by `Scaling.weight_decay_scale`) unless
    `decoupled_weight_decay` is set (AdamW).

    **Arguments:** `learning_rate` (η), `b1`, `b2`, `eps` (optax defaults 0.9, 0.999,
    1e-8), `weight_decay` (κ, default 0), `decoupled_weight_decay` (default False).
    """

    learning_rate: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False

    def __check_init__(self):
        _check_rate(self.learning_rate, "learning_rate")
        _check_decay_rate(self.b1, "b1", "0.9")
        _check_decay_rate(self.b2, "b2", "0.999")
        _check_non_negative(self.eps, "eps")
        _check_non_negative(self.weight_decay, "weight_decay")

    def group(self, scaling):
        return (scaling.adam_lr_scale, scaling.adam_eps_scale, scaling.weight_decay_scale)

    def transform(self, lr_scale, eps_scale, wd_scale):
        rate = self.learning_rate * lr_scale
        decay = self.weight_decay * wd_scale
        if self.decoupled_weight_decay:
            return optax.adamw(rate, b1=self.b1, b2=self.b2, eps=self.eps * eps_scale, weight_decay=decay)
        return optax.chain(
            optax.add_decayed_weights(decay) if decay else optax.identity(),
            optax.adam(rate, b1=self.b1, b2=self.b2, eps=self.eps * eps_scale),
        )


class FromOptax(AbstractOptimiser):
    """Any optax optimiser whose update is proportional to its learning rate, built by
    `factory(learning_rate)`, with the model's SGD-like (`adaptive=False`) or Adam-like
    (`adaptive=True`) learning-rate scales.

    **Arguments:** `factory` (e.g. `optax.lion`), `learning_rate` (η), `adaptive`.
    """

    factory: object
    learning_rate: float
    adaptive: bool = True

    def __check_init__(self):
        if not callable(self.factory):
            raise TypeError(f"`factory` must be callable (e.g. optax.lion), got {self.factory!r}.")
        _check_rate(self.learning_rate, "learning_rate")

    def group(self, scaling):
        return (scaling.adam_lr_scale if self.adaptive else scaling.sgd_lr_scale,)

    def transform(self, lr_scale):
        factory = cast(Callable[..., optax.GradientTransformation], self.factory)  # callable: checked at init
        return factory(self.learning_rate * lr_scale)


def make_optimiser(model: PCModel, config: AbstractOptimiser) -> optax.GradientTransformation:
    """An optax transformation for `model`'s parameters (`eqx.filter(model,
    eqx.is_array)`) that applies each parameter's scales from its
    [`Scaling`][pcscale.Scaling]. The result depends only on the model's structure and
    scalings, so one call serves both the PC model and its BP twin.

    **Arguments:**

    - `model`: the [`PCModel`][pcscale.PCModel] whose parameters will be optimised.
    - `config`: [`SGD`][pcscale.SGD], [`Adam`][pcscale.Adam] or
      [`FromOptax`][pcscale.FromOptax].
    """
    if not isinstance(config, AbstractOptimiser):
        raise TypeError(
            f"`config` must be pcscale.SGD(...), pcscale.Adam(...) or pcscale.FromOptax(...), "
            f"got {type(config).__name__}."
        )
    groups: dict[tuple[float, ...], int] = {}

    def label(scaling: Scaling) -> int:
        return groups.setdefault(config.group(scaling), len(groups))

    labels = jax.tree.map(label, model.parameter_scalings())
    transforms: dict[Hashable, optax.GradientTransformation] = {
        index: config.transform(*factors) for factors, index in groups.items()
    }
    # The labels tree is a PCModel, which is callable: hand it over through a function
    # so that optax does not mistake it for a labelling function.
    return optax.partition(transforms, lambda params: labels)
