"""Builders that return PCModels, and the path for bringing your own blocks."""

from ._activation import ACTIVATIONS as ACTIVATIONS, GAINS as GAINS
from ._custom import infer_roles as infer_roles, parameterise as parameterise
from ._mlp import Linear as Linear, mlp as mlp, residual_mlp as residual_mlp
from ._resnet import AvgPool2 as AvgPool2, Conv2d as Conv2d, Readout as Readout, resnet as resnet
from ._resnet18 import resnet18 as resnet18
from ._transformer import (
    Branch as Branch,
    Embedding as Embedding,
    LayerNorm as LayerNorm,
    TokenLinear as TokenLinear,
    transformer as transformer,
)
from ._vgg import VGG5 as VGG5, VGG7 as VGG7, MaxPool2 as MaxPool2, VGGBlock as VGGBlock, vgg as vgg

__all__ = [
    "ACTIVATIONS", "GAINS", "VGG5", "VGG7", "AvgPool2", "Branch", "Conv2d", "Embedding", "LayerNorm",
    "Linear", "MaxPool2", "Readout", "TokenLinear", "VGGBlock", "infer_roles", "mlp", "parameterise",
    "residual_mlp", "resnet", "resnet18", "transformer", "vgg",
]
