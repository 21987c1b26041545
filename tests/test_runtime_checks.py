"""The test run checks annotations at run time: pcscale is imported through jaxtyping's
import hook with beartype, and JAX's implicit rank promotion is an error (both set in
tests/conftest.py). These tests fail if either is switched off."""

import jax
import jax.numpy as jnp
import pytest

from pcscale.nn._mlp import Linear


def test_pcscale_is_imported_with_its_shape_annotations_checked():
    layer = Linear(jnp.ones((3, 4)))
    assert layer(jnp.ones(4)).shape == (3,)
    # A batch where one unbatched vector is annotated (Float[Array, " in"]): the call
    # itself would broadcast, so only the runtime check can refuse it.
    with pytest.raises(Exception, match="Type-check error|TypeCheckError|violates type hint"):
        layer(jnp.ones((2, 4)).T)
    # The dtype: an integer vector would be promoted by the product itself.
    with pytest.raises(Exception, match="Type-check error|TypeCheckError|violates type hint"):
        layer(jnp.ones(4, dtype=jnp.int32))


def test_implicit_rank_promotion_is_an_error():
    assert jax.config.jax_numpy_rank_promotion == "raise"
    with pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones(3) + jnp.ones((2, 3))
