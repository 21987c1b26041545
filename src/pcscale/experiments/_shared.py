"""The settings that most experiments share, each declared once with its default and
one-line meaning: the data, the sizes swept, the parameterisation, training and
inference. An experiment's config inherits the groups it uses and keeps flat field
names, so `--set batch=8`, the saved JSON and the run folder's identity read the same
as a config that declares every field itself.

A config changes a default by declaring the field again with its value alone
(`batch: int = 32`), which keeps the meaning given here, or with
`field` (from `_config`) to give it a meaning of its own. Dataclasses
list the fields of the last base first, so a config names its groups last to first:
`class Config(TrainingFields, SizeFields, DataFields)` lists the data, the sizes, then
training, then its own fields."""

from __future__ import annotations

import dataclasses

from . import _names
from ._config import field


@dataclasses.dataclass(frozen=True)
class DataFields:
    """One fixed batch of a dataset read from the data root."""

    dataset: str = field("mnist", "the image dataset of the one fixed batch (labels one-hot)",
                         choices=tuple(_names.IMAGE_DATASETS))
    data_root: str = field("", 'the folder datasets are read from; "" is $PCSCALE_DATA, or else the cache')
    fallback: bool = field(True, "a missing dataset falls back to the offline default (quick presets) instead of "
                                 "being an error (paper presets)")
    batch: int = field(16, "B: the samples of the one fixed batch")


@dataclasses.dataclass(frozen=True)
class SizeFields:
    """The widths and seeds swept, one cell each."""

    widths: tuple[int, ...] = field((8, 32, 128), "N: the widths swept, one cell each")
    seeds: tuple[int, ...] = field((0,), "the seeds swept, one cell each: PRNGKey(seed) draws the cell's batch and "
                                         "initialisation (docs/background.md §5.0)")


@dataclasses.dataclass(frozen=True)
class DepthFields:
    """The depths swept, one cell each."""

    hidden_layers: tuple[int, ...] = field((1, 3), "H: the hidden layers swept, one cell each (L = H + 1 weight "
                                                   "layers)")


@dataclasses.dataclass(frozen=True)
class ActivationFields:
    """The nonlinearity of the hidden layers."""

    activation: str = field("tanh", "φ: the activation of the hidden layers", choices=tuple(_names.ACTIVATIONS))


@dataclasses.dataclass(frozen=True)
class ParameterisationFields:
    """How the network scales with width and depth."""

    parameterisation: str = field("mupc", "how initialisation, multipliers and learning rates scale with width and "
                                          "depth (docs/parameterisation.md)",
                                  choices=tuple(_names.PARAMETERISATIONS))
    gamma0: float = field(1.0, "γ0: the output scale, which sets how strongly features learn")


@dataclasses.dataclass(frozen=True)
class TrainingFields:
    """How long, how fast and in which precision the PC model and its BP twin train."""

    learning_rate: float = field(1e-3, "η: the optimiser's base rate (Adam; GD on the toy task), which the "
                                       "parameterisation's rule scales per layer")
    steps: int = field(20, "T: the training steps")
    float64: bool = field(False, "compute in float64 (the run turns JAX's 64-bit mode on)")


@dataclasses.dataclass(frozen=True)
class SolveFields:
    """When a numerical inference stops."""

    step_size: float = field(0.3, "β per sample of gradient-descent inference (nesterov uses β/2; the other "
                                  "solvers choose their own steps)")
    rtol: float = field(1e-6, "inference stops at this relative residual; 0 runs the whole budget (the "
                              "reference's fixed-iteration protocol)")
    max_inference_steps: int = field(100, "the inference budget, in the solver's own steps (Newton steps for "
                                          "auto); unconverged steps are flagged")


@dataclasses.dataclass(frozen=True)
class InferenceFields(SolveFields):
    """The inference solver and when it stops."""

    solver: str = field("auto", "the inference solver by name: auto (pcscale.auto_solver's choice, which "
                                "certifies every step), gd (the paper's gradient descent), or another "
                                "(docs/inference.md)", choices=tuple(_names.SOLVERS))


@dataclasses.dataclass(frozen=True)
class ImageTrainingFields(TrainingFields, InferenceFields, ActivationFields, ParameterisationFields, SizeFields,
                          DataFields):
    """Every group an experiment on an image batch with numerical inference uses (the
    data, the sizes, the network, training and inference), in that order."""
