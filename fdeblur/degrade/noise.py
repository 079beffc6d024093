"""Sensor noise on the device, per sample.

- Gaussian: y = x + sigma n, n ~ N(0, 1): E[y] = x, Var[y] = sigma^2.
- Poisson-Gaussian (Foi et al. 2008): y = P / peak + sigma n with P ~ Poisson(peak x), where peak
  is the photon count at white: E[y] = x, Var[y] = x / peak + sigma^2. By default the Poisson part
  is its normal approximation (same mean and variance; exact for the moments, close in
  distribution for peak x >~ 20, and as cheap as the Gaussian); `exact=True` draws real Poisson
  counts (jax.random.poisson: rejection sampling, ~50x slower on CPU).
Outputs are not clipped here (the caller clips once, at the end).
"""
import jax
import jax.numpy as jnp

NOISES = ("none", "gaussian", "poisson_gaussian")


def gaussian_noise(key: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """x: [B, ...], sigma: [B] (or scalar)."""
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])
  sigma = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
  return x + sigma * jax.random.normal(key, x.shape, jnp.float32)


def poisson_gaussian_noise(key: jax.Array, x: jax.Array, peak: jax.Array, sigma: jax.Array,
                           exact: bool = False) -> jax.Array:
  """x: [B, ...] in [0, 1]; peak, sigma: [B] (or scalars)."""
  shape = (-1,) + (1,) * (x.ndim - 1)
  peak = jnp.broadcast_to(jnp.asarray(peak, jnp.float32), x.shape[:1]).reshape(shape)
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1]).reshape(shape)
  lam = jnp.maximum(x, 0.0) * peak
  if exact:
    k_p, k_g = jax.random.split(key)
    shot = jax.random.poisson(k_p, lam, x.shape).astype(jnp.float32) / peak
    n = jax.random.normal(k_g, x.shape, jnp.float32)
  else:
    n2 = jax.random.normal(key, (2,) + x.shape, jnp.float32)
    shot = x + jnp.sqrt(lam) / peak * n2[0]
    n = n2[1]
  return shot + sigma * n


def add_noise(keys: jax.Array, images: jax.Array, cfg) -> jax.Array:
  """Noise of kind `cfg.noise` with per-sample parameters drawn from each sample's key.
  keys: [B]; images: [B, H, W, C]."""
  kind = cfg.noise
  if kind == "none":
    return images
  if kind not in NOISES:
    raise ValueError(f"config.blur.noise must be one of {NOISES}, got {kind!r}")

  def one(key, img):
    k_param, k_noise = jax.random.split(key)
    u = jax.random.uniform(k_param, (2,))
    lo, hi = cfg.noise_sigma
    sigma = lo + (hi - lo) * u[0]
    if kind == "gaussian":
      return gaussian_noise(k_noise, img[None], sigma)[0]
    lo, hi = cfg.noise_peak
    peak = lo + (hi - lo) * u[1]
    return poisson_gaussian_noise(k_noise, img[None], peak, sigma,
                                  cfg.noise_poisson_exact)[0]

  return jax.vmap(one)(keys, images)
