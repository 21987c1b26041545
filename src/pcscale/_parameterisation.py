"""Width and depth parameterisations: the only module that knows what SP, NTP, μP,
μPC and CompleteP mean.

Every weight of a network has a [`WeightRole`][pcscale.WeightRole] (input, hidden,
output or vector, its fan-in and whether it sits in a residual branch). Together with
the network's [`NetworkShape`][pcscale.NetworkShape] (width N, depth L, whether it has
residual branches), a parameterisation turns that role into a
[`Scaling`][pcscale.Scaling]: forward multiplier, init distribution and std, learning-rate
scales for SGD-like and Adam-like optimisers, Adam ε scale and weight-decay scale. The
tables implemented here are those of `science.md` §3.1.

Builders apply a parameterisation once, when they build a model; afterwards every other
module reads the scalings stored on the model and never asks which preset it was.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray


class Role(enum.Enum):
    """What a weight does in the network."""

    INPUT = "input"
    """First map, from the data (fan-in D) to the width N."""
    HIDDEN = "hidden"
    """A width-to-width map (fan-in N), in a residual branch or not."""
    OUTPUT = "output"
    """The readout, from the width to the output (fan-in N)."""
    VECTOR = "vector"
    """A bias vector (starts at zero)."""
    GAIN = "gain"
    """A gain vector, e.g. of a normalisation layer (starts at one)."""


class Init(enum.Enum):
    """Distribution of a raw weight at initialisation."""

    NORMAL = "normal"
    """N(0, std²)."""
    UNIFORM = "uniform"
    """U(−√3·std, +√3·std), which has standard deviation std."""
    ZEROS = "zeros"
    """All zeros (biases)."""
    ONES = "ones"
    """All ones (gains)."""


class AdamRule(enum.Enum):
    """How Adam-like learning rates are assigned (`science.md` §3.1)."""

    REFERENCE = "reference"
    """One global rate for every weight, as the paper's reference code does."""
    PER_ROLE = "per_role"
    """Input, output and vector weights get η; hidden and branch weights the scaled rate."""


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class WeightRole:
    """The role of one weight.

    **Arguments:**

    - `kind`: a [`Role`][pcscale.Role].
    - `fan_in`: number of inputs of the map this weight belongs to (D for the input
      layer, N for hidden and output layers). Must be ≥ 1.
    - `branch`: whether the weight sits in a residual branch `z + L^(−α)·branch(z)`.
    """

    kind: Role
    fan_in: int
    branch: bool = False

    def __post_init__(self):
        if not isinstance(self.kind, Role):
            raise TypeError(
                f"`kind` must be a pcscale.Role, got {self.kind!r}; use e.g. Role.HIDDEN."
            )
        if not _is_positive_int(self.fan_in):
            raise ValueError(
                f"`fan_in` must be a positive integer, got {self.fan_in!r}; pass the "
                "number of inputs of the map."
            )
        if self.branch and self.kind is not Role.HIDDEN:
            raise ValueError(
                f"only hidden weights sit in residual branches, got branch=True for a "
                f"{self.kind.value} weight; set branch=False."
            )


@dataclasses.dataclass(frozen=True)
class NetworkShape:
    """The network-level sizes a parameterisation scales with.

    **Arguments:**

    - `width`: N, the hidden width (channels for a CNN, d_model for a transformer).
    - `depth`: L, the number of weight layers (or the builder's stated effective depth).
    - `residual`: whether the network has residual branches at all. Depth factors of
      learning rates apply only to networks that do: a network without skips is
      parameterised as μP by every member of the μP family.
    """

    width: int
    depth: int
    residual: bool = False

    def __post_init__(self):
        if not _is_positive_int(self.width):
            raise ValueError(
                f"`width` must be a positive integer, got {self.width!r}; pass e.g. width=128."
            )
        if not _is_positive_int(self.depth):
            raise ValueError(
                f"`depth` must be a positive integer, got {self.depth!r}; pass e.g. depth=4."
            )


@dataclasses.dataclass(frozen=True)
class Scaling:
    """Every scale of one weight, fixed when the model is built.

    - `multiplier`: forward multiplier a; the layer computes a·W.
    - `init`, `init_std`: distribution and standard deviation of the raw weight W.
    - `sgd_lr_scale`, `adam_lr_scale`: factors on the base learning rate η for SGD-like
      and Adam-like optimisers (the raw-weight rate is η·scale).
    - `adam_eps_scale`: factor on Adam's ε.
    - `weight_decay_scale`: factor on the weight-decay coefficient.
    """

    multiplier: float = 1.0
    init: Init = Init.NORMAL
    init_std: float = 1.0
    sgd_lr_scale: float = 1.0
    adam_lr_scale: float = 1.0
    adam_eps_scale: float = 1.0
    weight_decay_scale: float = 1.0

    def sample(self, shape: tuple[int, ...], dtype, *, key: PRNGKeyArray) -> Array:
        """Draw a raw weight of `shape` from this scaling's init distribution."""
        if self.init is Init.ZEROS:
            return jnp.zeros(shape, dtype)
        if self.init is Init.ONES:
            return jnp.ones(shape, dtype)
        if self.init is Init.UNIFORM:
            bound = math.sqrt(3.0) * self.init_std
            return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)
        return self.init_std * jax.random.normal(key, shape, dtype)


def _check_gamma0(gamma0) -> None:
    if not (_is_real(gamma0) and math.isfinite(gamma0) and gamma0 > 0):
        raise ValueError(
            f"`gamma0` must be a positive finite number, got {gamma0!r}; the default is 1.0."
        )


def _check_adam_rule(rule) -> None:
    if not isinstance(rule, AdamRule):
        raise TypeError(
            f"`adam_rule` must be a pcscale.AdamRule, got {rule!r}; use AdamRule.REFERENCE "
            "or AdamRule.PER_ROLE."
        )


def _vector_scaling(role: WeightRole, **scales) -> Scaling:
    """Biases start at zero, gains at one; neither has weight decay or a multiplier."""
    init = Init.ONES if role.kind is Role.GAIN else Init.ZEROS
    return Scaling(init=init, init_std=0.0, weight_decay_scale=0.0, **scales)


class AbstractParameterisation(eqx.Module):
    """Maps a weight's role and the network's shape to its [`Scaling`][pcscale.Scaling].

    Subclasses implement `scaling` and carry the output scale `gamma0` (γ0); nothing outside this module inspects which
    subclass is in use.
    """

    @abc.abstractmethod
    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        """Scales of a weight with `role` in a network of `shape`."""

    @abc.abstractmethod
    def attention_logit_scale(self, head_dim: int) -> float:
        """Factor on attention logits q·k for heads of dimension `head_dim`."""


class SP(AbstractParameterisation):
    """Standard parameterisation: PyTorch/Equinox default uniform init
    U(−1/√fan_in, 1/√fan_in), no multipliers except 1/γ0 on the readout, the same
    learning rate η for every weight and every optimiser.

    **Arguments:**

    - `gamma0`: output scale γ0 (readout multiplier 1/γ0). Default 1.
    """

    gamma0: float = 1.0

    def __check_init__(self):
        _check_gamma0(self.gamma0)

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        if role.kind in (Role.VECTOR, Role.GAIN):
            return _vector_scaling(role)
        multiplier = 1.0 / self.gamma0 if role.kind is Role.OUTPUT else 1.0
        return Scaling(
            multiplier=multiplier,
            init=Init.UNIFORM,
            init_std=1.0 / math.sqrt(3.0 * role.fan_in),
        )

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)


class NTP(AbstractParameterisation):
    """Neural tangent parameterisation: N(0, 1) weights, multiplier 1/√fan_in
    (1/√(N·L) on residual branches, 1/(γ0·√N) on the readout) and an unscaled rate η.

    The paper defines no Adam rule for NTP; `pcscale` uses η for Adam as well.

    **Arguments:**

    - `gamma0`: output scale γ0. Default 1.
    """

    gamma0: float = 1.0

    def __check_init__(self):
        _check_gamma0(self.gamma0)

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        if role.kind in (Role.VECTOR, Role.GAIN):
            return _vector_scaling(role)
        multiplier = 1.0 / math.sqrt(role.fan_in)
        if role.branch:
            multiplier /= math.sqrt(shape.depth)
        if role.kind is Role.OUTPUT:
            multiplier /= self.gamma0
        return Scaling(multiplier=multiplier)

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)


class _MuPFamily(AbstractParameterisation):
    """μP width scaling with an optional depth exponent α (None: width only)."""

    # Concrete subclasses declare `alpha` (float, or None for width-only μP), `gamma0`
    # and `adam_rule`.

    def _depth_factor(self, shape: NetworkShape, power: float) -> float:
        # Depth factors only exist for networks with residual branches; without skips
        # every member of the family is μP (science.md §3.1).
        if self.alpha is None or not shape.residual:
            return 1.0
        return float(shape.depth) ** power

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        alpha = 0.0 if self.alpha is None else self.alpha
        width = shape.width
        sgd = self.gamma0**2 * width * self._depth_factor(shape, 2 * alpha - 1)
        adam_scaled = self._depth_factor(shape, alpha - 1) / math.sqrt(width)
        if self.adam_rule is AdamRule.REFERENCE or role.kind is Role.HIDDEN:
            adam = adam_scaled
        else:
            adam = 1.0
        if role.kind in (Role.VECTOR, Role.GAIN):
            return _vector_scaling(role, sgd_lr_scale=sgd, adam_lr_scale=adam)
        multiplier = 1.0 / math.sqrt(role.fan_in)
        if role.kind is Role.OUTPUT:
            multiplier = 1.0 / (self.gamma0 * role.fan_in)
        elif role.branch and self.alpha is not None:
            multiplier *= float(shape.depth) ** (-self.alpha)
        return Scaling(multiplier=multiplier, sgd_lr_scale=sgd, adam_lr_scale=adam)

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / head_dim


class MuP(_MuPFamily):
    """μP (maximal update, mean-field) width scaling with no depth factor.

    N(0, 1) weights; multipliers 1/√D (input), 1/√N (hidden and branch), 1/(γ0·N)
    (readout); SGD rate η·γ0²·N; Adam rate η/√N.

    **Arguments:**

    - `gamma0`: output scale γ0. Default 1.
    - `adam_rule`: [`AdamRule`][pcscale.AdamRule]; default the paper's reference rule.
    """

    alpha: None = eqx.field(default=None, init=False)
    gamma0: float = 1.0
    adam_rule: AdamRule = AdamRule.REFERENCE

    def __check_init__(self):
        _check_gamma0(self.gamma0)
        _check_adam_rule(self.adam_rule)


class DepthMuP(_MuPFamily):
    """μP width scaling plus residual branches scaled by L^(−α), α ∈ [1/2, 1].

    Multipliers 1/√D (input), 1/√N (hidden, no skip), L^(−α)/√N (branch), 1/(γ0·N)
    (readout); SGD rate η·γ0²·N·L^(2α−1); Adam rate η·L^(α−1)/√N. Without residual
    branches the depth factors vanish (the network is μP).

    **Arguments:**

    - `alpha`: depth exponent in [1/2, 1] (1/2: Depth-μP / μPC, 1: CompleteP).
    - `gamma0`: output scale γ0. Default 1.
    - `adam_rule`: [`AdamRule`][pcscale.AdamRule]; default the paper's reference rule.
    """

    alpha: float
    gamma0: float = 1.0
    adam_rule: AdamRule = AdamRule.REFERENCE

    def __check_init__(self):
        _check_gamma0(self.gamma0)
        if not (_is_real(self.alpha) and 0.5 <= float(self.alpha) <= 1.0):
            raise ValueError(
                f"`alpha` must lie in [1/2, 1], got {self.alpha!r}; use alpha=0.5 "
                "(μPC / Depth-μP) or alpha=1.0 (CompleteP), or MuP() for no depth scaling."
            )
        _check_adam_rule(self.adam_rule)


def MuPC(gamma0: float = 1.0, *, adam_rule: AdamRule = AdamRule.REFERENCE) -> DepthMuP:
    """μPC: μP plus Depth-μP branches (α = 1/2), output multiplier 1/(γ0·N).

    **Arguments:** as [`DepthMuP`][pcscale.DepthMuP].
    """
    return DepthMuP(alpha=0.5, gamma0=gamma0, adam_rule=adam_rule)


def CompleteP(gamma0: float = 1.0, *, adam_rule: AdamRule = AdamRule.REFERENCE) -> DepthMuP:
    """CompleteP: μP plus branches scaled by 1/L (α = 1).

    **Arguments:** as [`DepthMuP`][pcscale.DepthMuP].
    """
    return DepthMuP(alpha=1.0, gamma0=gamma0, adam_rule=adam_rule)
