"""jaxtyping aliases shared by all modules."""

from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Shaped

Activities: TypeAlias = tuple[Array, ...]
"""The free activities z_1 … z_H, one array per hidden layer, batched on axis 0."""

RealScalar: TypeAlias = float | np.floating | np.integer
"""A real number given by the user: a Python float or int, or a NumPy scalar."""

BatchX: TypeAlias = Shaped[ArrayLike, " batch *input"]
BatchY: TypeAlias = Shaped[ArrayLike, " batch *output"]  # integer one-hot labels are accepted

__all__ = ["Activities", "Array", "BatchX", "BatchY", "EnergyModel", "Float", "PyTree", "RealScalar"]


@runtime_checkable
class EnergyModel(Protocol):
    """What the inference loop needs of a model: the energy of one sample's free states
    and their starting point. A [`PCModel`][pcscale.PCModel] is one; so is the clamped
    view of a bidirectional model."""

    def energy_one(self, z: Activities, x: Array, y: Array) -> Array: ...

    def activities_one(self, x: Array) -> Activities: ...
