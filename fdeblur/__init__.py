"""fdeblur: face motion deblurring in JAX/Flax."""
