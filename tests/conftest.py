import jax

# Tests run in float64; the library itself never changes this flag.
jax.config.update("jax_enable_x64", True)
