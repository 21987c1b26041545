"""Builders that return PCModels."""

from ._activation import ACTIVATIONS as ACTIVATIONS
from ._mlp import Linear as Linear, mlp as mlp, residual_mlp as residual_mlp
