"""jaxtyping aliases shared by all modules."""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PyTree, Shaped

Activities: TypeAlias = tuple[Array, ...]
"""The free activities z_1 … z_H, one array per hidden layer, batched on axis 0."""

BatchX: TypeAlias = Shaped[ArrayLike, "batch *input"]
BatchY: TypeAlias = Float[ArrayLike, "batch *output"]

__all__ = ["Activities", "Array", "BatchX", "BatchY", "Float", "PyTree"]
