"""jaxtyping aliases shared by all modules."""

from typing import TypeAlias

import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree, Shaped

Activities: TypeAlias = tuple[Array, ...]
"""The free activities z_1 … z_H, one array per hidden layer, batched on axis 0."""

RealScalar: TypeAlias = float | np.floating | np.integer
"""A real number given by the user: a Python float or int, or a NumPy scalar."""

BatchX: TypeAlias = Shaped[ArrayLike, " batch *input"]
BatchY: TypeAlias = Shaped[ArrayLike, " batch *output"]  # integer one-hot labels are accepted

__all__ = ["Activities", "Array", "BatchX", "BatchY", "Float", "PyTree", "RealScalar"]
