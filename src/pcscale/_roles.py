"""The vocabulary parameterisations speak: what a weight does (`WeightRole`), the
network it sits in (`NetworkShape`) and the scales a parameterisation gives it
(`Scaling`). Builders declare roles; `_parameterisation.py` turns them into scalings.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ._validation import is_finite_real


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
    """How Adam-like learning rates are assigned to the μP family (`docs/background.md` §3.1,
    §3.3). Weights in the σ0 convention (`WeightRole.std`, the transformer) always follow
    the per-group table of `docs/background.md` §3.4, which is per-role already."""

    REFERENCE = "reference"
    """One global rate η·L^(α−1)/√N for every weight, as the paper's MLP code does."""
    PER_ROLE = "per_role"
    """The textbook μP / Depth-μP prescription: input, output and vector weights get η,
    hidden weights outside branches η/√N, branch weights η·L^(α−1)/√N."""
    RESNET_REFERENCE = "resnet_reference"
    """As `PER_ROLE`, but the readout gets η/√N: the paper's ResNet code (`docs/background.md`
    §3.3 and §3.5, item 4), where μP would give it η."""


class InitStdRule(enum.Enum):
    """How the σ0 convention (`WeightRole.std`, the transformer) sets the init std of
    hidden matrices; `docs/background.md` §3.5, item 1."""

    STANDARD = "standard"
    """μP family: σ0·√(d_0/d) for hidden matrices (CompleteP), so that features keep
    their size as the width grows. SP: a constant σ0, and σ0/√(2·L) on branch outputs
    (GPT-2)."""
    REFERENCE = "reference"
    """The paper's transformer code (Figure 4c): μP family σ0 at every width; SP σ0/√d,
    and σ0/√d/√(2·L) on branch outputs. Inverted relative to `STANDARD`."""


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1


@dataclasses.dataclass(frozen=True)
class WeightRole:
    """The role of one weight.

    **Arguments:**

    - `kind`: a [`Role`][pcscale.Role].
    - `fan_in`: number of inputs of the map this weight belongs to (D for the input
      layer, N for hidden and output layers, C·k² for a convolution, the vocabulary size
      for an embedding table). Must be ≥ 1.
    - `branch`: whether the weight sits in a residual branch `z + L^(−α)·branch(z)`
      (hidden matrices, and the vectors of a branch's normalisation layers). Branch
      weights get the depth factors of the learning rate and Adam ε.
    - `branch_output`: whether this weight produces the branch's output (or, for a
      bias, is added at it) and so carries the branch multiplier L^(−α). Default True (a
      one-weight branch, as in MLPs and CNNs); set False for the inner weights and biases
      of a multi-weight branch (a transformer's W_qkv, W1 and their biases, its
      LayerNorm biases), so that the branch is scaled once. Gains are never scaled.
    - `gain`: gain of the activation the weight's input passed through (5/3 for tanh, √2
      for ReLU, 1 for linear): the μP-family multiplier of input and hidden weights is
      gain/√fan_in. Default 1; SP ignores it.
    - `std`: σ0 to use the σ0 convention of `docs/background.md` §3.4 (GPT-style N(0, σ0²)
      weights with width scaling in the init std and the learning rate rather than in
      multipliers), as the transformer does. Vectors of such a network pass it too: it
      selects their learning-rate and ε table (they still start at 0 or 1). Default None:
      the N(0,1)-with-multipliers convention of §3.1 and §3.3.
    """

    kind: Role
    fan_in: int
    branch: bool = False
    branch_output: bool = True
    gain: float = 1.0
    std: float | None = None

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
        if self.branch and self.kind in (Role.INPUT, Role.OUTPUT):
            raise ValueError(
                f"input and output weights never sit in residual branches, got branch=True "
                f"for a {self.kind.value} weight; set branch=False."
            )
        if not (is_finite_real(self.gain) and self.gain > 0):
            raise ValueError(
                f"`gain` must be a positive finite number, got {self.gain!r}; use 1.0 for a "
                "linear input, 5/3 for tanh, √2 for ReLU."
            )
        if self.std is not None and not (is_finite_real(self.std) and self.std > 0):
            raise ValueError(
                f"`std` must be None or a positive finite σ0, got {self.std!r}; the paper's "
                "transformer uses std=0.02."
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
    - `base_width`: d_0, the width at which σ0-convention weights (`WeightRole.std`) have
      their nominal scales; they scale with d/d_0. Default 1, as the paper's transformer.
      The §3.1 / §3.3 convention does not use it.
    """

    width: int
    depth: int
    residual: bool = False
    base_width: int = 1

    @property
    def width_ratio(self) -> float:
        """d/d_0, the width multiplier of the σ0 convention."""
        return self.width / self.base_width

    def __post_init__(self):
        if not _is_positive_int(self.width):
            raise ValueError(
                f"`width` must be a positive integer, got {self.width!r}; pass e.g. width=128."
            )
        if not _is_positive_int(self.depth):
            raise ValueError(
                f"`depth` must be a positive integer, got {self.depth!r}; pass e.g. depth=4."
            )
        if not _is_positive_int(self.base_width):
            raise ValueError(
                f"`base_width` must be a positive integer, got {self.base_width!r}; the "
                "default 1 reproduces the paper."
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


