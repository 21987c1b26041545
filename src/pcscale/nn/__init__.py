"""Builders that return PCModels, and the path for bringing your own blocks."""

from ._activation import ACTIVATIONS as ACTIVATIONS, GAINS as GAINS
from ._custom import infer_roles as infer_roles, parameterise as parameterise
from ._mlp import Linear as Linear, mlp as mlp, residual_mlp as residual_mlp
from ._resnet import AvgPool2 as AvgPool2, Conv2d as Conv2d, Readout as Readout, resnet as resnet
from ._transformer import (
    Branch as Branch,
    Embedding as Embedding,
    LayerNorm as LayerNorm,
    TokenLinear as TokenLinear,
    transformer as transformer,
)

__all__ = [
    "ACTIVATIONS", "GAINS", "AvgPool2", "Branch", "Conv2d", "Embedding", "LayerNorm", "Linear",
    "Readout", "TokenLinear", "infer_roles", "mlp", "parameterise", "residual_mlp", "resnet",
    "transformer",
]
