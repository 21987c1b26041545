"""Width and depth parameterisations: the only module that knows what SP, NTP, μP,
μPC and CompleteP mean.

Every weight of a network has a [`WeightRole`][pcscale.WeightRole] (input, hidden,
output or vector, its fan-in, whether it sits in a residual branch, the gain of its
input's activation, and which init convention it follows). Together with the network's
[`NetworkShape`][pcscale.NetworkShape] (width N, depth L, whether it has residual
branches, base width), a parameterisation turns that role into a
[`Scaling`][pcscale.Scaling]: forward multiplier, init distribution and std,
learning-rate scales for SGD-like and Adam-like optimisers, Adam ε scale and
weight-decay scale; and it gives the attention logit scale. The tables implemented here
are those of `docs/background.md` §3.1 (MLPs), §3.3 (ResNets) and §3.4 (transformers).

Builders apply a parameterisation once, when they build a model; afterwards every other
module reads the scalings stored on the model and never asks which preset it was.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING

import equinox as eqx
import numpy as np

from ._custom_types import RealScalar
from ._roles import (
    AdamRule as AdamRule,
    Init as Init,
    InitStdRule as InitStdRule,
    NetworkShape as NetworkShape,
    Role as Role,
    Scaling as Scaling,
    WeightRole as WeightRole,
)
from ._validation import is_finite_real


def _check_gamma0(gamma0) -> None:
    if not (is_finite_real(gamma0) and gamma0 > 0):
        raise ValueError(
            f"`gamma0` must be a positive finite number, got {gamma0!r}; the default is 1.0."
        )


def _check_enum(value, kind, name: str) -> None:
    if not isinstance(value, kind):
        members = " or ".join(f"{kind.__name__}.{member.name}" for member in kind)
        raise TypeError(f"`{name}` must be a pcscale.{kind.__name__}, got {value!r}; use {members}.")


def _check_alpha(alpha, *, allow_none: bool) -> None:
    if alpha is None and allow_none:
        return
    if not (alpha is not None and is_finite_real(alpha) and 0.5 <= float(alpha) <= 1.0):
        raise ValueError(
            f"`alpha` must lie in [1/2, 1], got {alpha!r}; use alpha=0.5 (μPC / Depth-μP) "
            "or alpha=1.0 (CompleteP)" + (", or None for no depth scaling." if allow_none else
                                            ", or MuP() for no depth scaling.")
        )


def _vector_scaling(role: WeightRole, **scales) -> Scaling:
    """Biases start at zero, gains at one; by default neither has a multiplier (a bias
    at a branch output gets the branch's) or weight decay."""
    init = Init.ONES if role.kind is Role.GAIN else Init.ZEROS
    scales.setdefault("weight_decay_scale", 0.0)
    return Scaling(init=init, init_std=0.0, **scales)


def _is_vector(role: WeightRole) -> bool:
    return role.kind in (Role.VECTOR, Role.GAIN)


def _branch_factor(alpha: float | None, role: WeightRole, shape: NetworkShape) -> float:
    """L^(−α) for the weights that produce a branch's output and for a bias added at that
    output; 1 for everything else (gains act on a branch's input and are never scaled),
    and for every weight when `alpha` is None."""
    carries = role.branch and role.branch_output and role.kind in (Role.HIDDEN, Role.VECTOR)
    return float(shape.depth) ** (-alpha) if alpha is not None and carries else 1.0


class AbstractParameterisation(eqx.Module):
    """Maps a weight's role and the network's shape to its [`Scaling`][pcscale.Scaling].

    Subclasses implement `scaling` and `attention_logit_scale` and carry the output scale
    `gamma0` (γ0); nothing outside this module inspects which subclass is in use.
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
    learning rate η for every weight and every optimiser; attention logits 1/√d_h.

    σ0-convention weights (the transformer, `docs/background.md` §3.4): N(0, σ0²) embeddings and
    head (multiplier 1/γ0), hidden matrices by `init_std_rule`, weight decay on every
    tensor.

    **Arguments:**

    - `gamma0`: output scale γ0 (readout multiplier 1/γ0). Default 1.
    - `alpha`: optional depth exponent of residual branches: with `alpha` set, branch
      outputs are multiplied by L^(−α). Default None (standard SP). The paper's SP
      transformer uses `alpha=1.0` (its 1/n_b branches, `docs/background.md` §3.5, item 2).
    - `init_std_rule`: an [`InitStdRule`][pcscale.InitStdRule] for σ0-convention hidden
      matrices. Default `STANDARD` (GPT-2: σ0, σ0/√(2L) on branch outputs).
    """

    gamma0: float = 1.0
    alpha: float | None = None
    init_std_rule: InitStdRule = InitStdRule.STANDARD

    def __check_init__(self):
        _check_gamma0(self.gamma0)
        _check_alpha(self.alpha, allow_none=True)
        _check_enum(self.init_std_rule, InitStdRule, "init_std_rule")

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        if role.std is not None:
            return self._std_scaling(role, shape, role.std)
        if _is_vector(role):
            return _vector_scaling(role, multiplier=_branch_factor(self.alpha, role, shape))
        multiplier = 1.0 / self.gamma0 if role.kind is Role.OUTPUT else _branch_factor(self.alpha, role, shape)
        return Scaling(
            multiplier=multiplier,
            init=Init.UNIFORM,
            init_std=1.0 / math.sqrt(3.0 * role.fan_in),
        )

    def _std_scaling(self, role: WeightRole, shape: NetworkShape, std: float) -> Scaling:
        # docs/background.md §3.4, SP column: one rate, one ε, weight decay κ on every tensor.
        # `std` is `role.std`, which the caller has checked is set.
        if _is_vector(role):
            return _vector_scaling(role, multiplier=_branch_factor(self.alpha, role, shape), weight_decay_scale=1.0)
        multiplier = 1.0
        if role.kind is Role.OUTPUT:
            multiplier = 1.0 / self.gamma0
        elif role.kind is Role.HIDDEN:
            if self.init_std_rule is InitStdRule.REFERENCE:
                std /= math.sqrt(shape.width_ratio)
            if role.branch and role.branch_output:
                std /= math.sqrt(2.0 * shape.depth)
            multiplier = _branch_factor(self.alpha, role, shape)
        return Scaling(multiplier=multiplier, init=Init.NORMAL, init_std=std)

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)


class NTP(AbstractParameterisation):
    """Neural tangent parameterisation: N(0, 1) weights, multiplier gain/√fan_in
    (1/√(N·L) on residual branches, 1/(γ0·√N) on the readout) and an unscaled rate η.

    The paper defines no Adam rule for NTP, nor the σ0 convention; `pcscale` uses η for
    Adam as well, and treats σ0-convention weights as N(0,1) weights.

    **Arguments:**

    - `gamma0`: output scale γ0. Default 1.
    """

    gamma0: float = 1.0

    def __check_init__(self):
        _check_gamma0(self.gamma0)

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        branch = _branch_factor(0.5, role, shape)  # NTP: 1/√L on branch outputs
        if _is_vector(role):
            return _vector_scaling(role, multiplier=branch)
        multiplier = 1.0 / math.sqrt(role.fan_in)
        if role.kind is Role.OUTPUT:
            multiplier /= self.gamma0
        else:
            multiplier *= role.gain
        return Scaling(multiplier=multiplier * branch)

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / math.sqrt(head_dim)


class _MuPFamily(AbstractParameterisation):
    """μP width scaling with an optional depth exponent α (None: width only)."""

    # Equinox runs every __check_init__ along the MRO: this one serves both presets.
    def __check_init__(self):
        _check_gamma0(self.gamma0)
        _check_enum(self.adam_rule, AdamRule, "adam_rule")
        _check_enum(self.init_std_rule, InitStdRule, "init_std_rule")

    # Concrete subclasses declare `alpha` (float, or None for width-only μP), `gamma0`,
    # `adam_rule` and `init_std_rule`. They are declared here for type checkers only: as
    # fields of this class they would change the subclasses' fields and __init__.
    if TYPE_CHECKING:
        alpha: float | None
        gamma0: float
        adam_rule: AdamRule
        init_std_rule: InitStdRule

    def _depth_factor(self, shape: NetworkShape, power: RealScalar) -> float:
        # Depth factors only exist for networks with residual branches; without skips
        # every member of the family is μP (docs/background.md §3.1).
        if self.alpha is None or not shape.residual:
            return 1.0
        return float(shape.depth) ** float(power)

    def scaling(self, role: WeightRole, shape: NetworkShape) -> Scaling:
        if role.std is not None:
            return self._std_scaling(role, shape, role.std)
        alpha = 0.0 if self.alpha is None else self.alpha
        width = shape.width
        sgd = self.gamma0**2 * width * self._depth_factor(shape, 2 * alpha - 1)
        branch_rate = self._depth_factor(shape, alpha - 1) / math.sqrt(width)
        if self.adam_rule is AdamRule.REFERENCE:
            adam = branch_rate
        elif role.kind is Role.HIDDEN:
            adam = branch_rate if role.branch else 1.0 / math.sqrt(width)
        elif role.kind is Role.OUTPUT and self.adam_rule is AdamRule.RESNET_REFERENCE:
            adam = 1.0 / math.sqrt(width)
        else:
            adam = 1.0
        if _is_vector(role):
            return _vector_scaling(
                role, multiplier=_branch_factor(self.alpha, role, shape), sgd_lr_scale=sgd, adam_lr_scale=adam
            )
        if role.kind is Role.OUTPUT:
            multiplier = 1.0 / (self.gamma0 * role.fan_in)
        else:
            multiplier = role.gain / math.sqrt(role.fan_in) * _branch_factor(self.alpha, role, shape)
        return Scaling(multiplier=multiplier, sgd_lr_scale=sgd, adam_lr_scale=adam)

    def _std_scaling(self, role: WeightRole, shape: NetworkShape, std: float) -> Scaling:
        # `std` is `role.std`, which the caller has checked is set.
        # docs/background.md §3.4, μPC / CompleteP column, with d replaced by m = d/d_0 and the
        # CompleteP depth factors written for a general α: block matrices get Adam rate
        # η·L^(α−1)/m and ε/(m·L^α) (η/d and ε/(d·n_b) at α = 1); embeddings, head and
        # vectors the base rate η. Weight decay κ·m on hidden matrices, κ on embeddings
        # and head, none on vectors. The SGD scales (no paper value) keep the mean-field
        # effective updates: γ0²·m for embeddings and head, L^(2α−1) for block tensors.
        alpha = 0.0 if self.alpha is None else self.alpha
        m = shape.width_ratio
        eps = (self._depth_factor(shape, -alpha) if role.branch else 1.0) / m
        if _is_vector(role):
            sgd = self._depth_factor(shape, 2 * alpha - 1) if role.branch else 1.0
            return _vector_scaling(
                role, multiplier=_branch_factor(self.alpha, role, shape), sgd_lr_scale=sgd, adam_eps_scale=eps
            )
        if role.kind in (Role.INPUT, Role.OUTPUT):
            multiplier = 1.0 / (self.gamma0 * m) if role.kind is Role.OUTPUT else 1.0
            return Scaling(
                multiplier=multiplier, init_std=std, sgd_lr_scale=self.gamma0**2 * m,
                adam_eps_scale=eps,
            )
        if self.init_std_rule is not InitStdRule.REFERENCE:
            std /= math.sqrt(m)
        if role.branch:
            adam = self._depth_factor(shape, alpha - 1) / m
            sgd = self._depth_factor(shape, 2 * alpha - 1)
        else:
            adam, sgd = 1.0 / m, 1.0
        return Scaling(
            multiplier=_branch_factor(self.alpha, role, shape), init_std=std, sgd_lr_scale=sgd,
            adam_lr_scale=adam, adam_eps_scale=eps, weight_decay_scale=m,
        )

    def attention_logit_scale(self, head_dim: int) -> float:
        return 1.0 / head_dim


_MUP_ARGS = """
    - `gamma0`: output scale γ0. Default 1.
    - `adam_rule`: [`AdamRule`][pcscale.AdamRule]; default the paper's MLP reference
      rule (one global rate).
    - `init_std_rule`: [`InitStdRule`][pcscale.InitStdRule] for σ0-convention hidden
      matrices (the transformer); default `STANDARD` (σ0·√(d_0/d), CompleteP).
"""


class MuP(_MuPFamily):
    alpha: None = eqx.field(default=None, init=False)
    gamma0: float = 1.0
    adam_rule: AdamRule = AdamRule.REFERENCE
    init_std_rule: InitStdRule = InitStdRule.STANDARD


def _python_real(value):
    """A NumPy scalar as the Python number it holds; anything else unchanged (and then
    checked by `__check_init__`)."""
    return value.item() if isinstance(value, np.floating | np.integer) else value


class DepthMuP(_MuPFamily):
    alpha: RealScalar = eqx.field(converter=_python_real)
    gamma0: RealScalar = eqx.field(default=1.0, converter=_python_real)
    adam_rule: AdamRule = AdamRule.REFERENCE
    init_std_rule: InitStdRule = InitStdRule.STANDARD

    def __check_init__(self):
        _check_alpha(self.alpha, allow_none=False)


MuP.__doc__ = (
    """μP (maximal update, mean-field) width scaling with no depth factor.

    N(0, 1) weights; multipliers gain/√D (input), gain/√N (hidden and branch),
    1/(γ0·N) (readout); SGD rate η·γ0²·N; Adam rate η/√N; attention logits 1/d_h.

    **Arguments:**
"""
    + _MUP_ARGS
)
DepthMuP.__doc__ = (
    """μP width scaling plus residual branches scaled by L^(−α), α ∈ [1/2, 1].

    Multipliers gain/√D (input), gain/√N (hidden, no skip), gain·L^(−α)/√N (branch),
    1/(γ0·N) (readout); SGD rate η·γ0²·N·L^(2α−1); Adam rate η·L^(α−1)/√N. Without
    residual branches the depth factors vanish (the network is μP).

    **Arguments:**

    - `alpha`: depth exponent in [1/2, 1] (1/2: Depth-μP / μPC, 1: CompleteP).
"""
    + _MUP_ARGS
)


def MuPC(
    gamma0: float = 1.0,
    *,
    adam_rule: AdamRule = AdamRule.REFERENCE,
    init_std_rule: InitStdRule = InitStdRule.STANDARD,
) -> DepthMuP:
    """μPC: μP plus Depth-μP branches (α = 1/2), output multiplier 1/(γ0·N).

    **Arguments:** as [`DepthMuP`][pcscale.DepthMuP].
    """
    return DepthMuP(alpha=0.5, gamma0=gamma0, adam_rule=adam_rule, init_std_rule=init_std_rule)


def CompleteP(
    gamma0: float = 1.0,
    *,
    adam_rule: AdamRule = AdamRule.REFERENCE,
    init_std_rule: InitStdRule = InitStdRule.STANDARD,
) -> DepthMuP:
    """CompleteP: μP plus branches scaled by 1/L (α = 1).

    **Arguments:** as [`DepthMuP`][pcscale.DepthMuP].
    """
    return DepthMuP(alpha=1.0, gamma0=gamma0, adam_rule=adam_rule, init_std_rule=init_std_rule)
