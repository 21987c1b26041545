import jax

# Tests that need float64 ask for it through dtypes; enabling x64 up front lets them.
# Library defaults stay float32 (builders take an explicit dtype).
jax.config.update("jax_enable_x64", True)
