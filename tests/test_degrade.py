import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from fdeblur import config_lib, degrade


def _cfg(**kw):
  c = config_lib.base_config().blur
  c.update(kw)
  return c


@pytest.mark.parametrize("gaussian_prob,motion_prob", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)])
def test_kernels_nonnegative_and_sum_to_one(gaussian_prob, motion_prob):
  cfg = _cfg(gaussian_prob=gaussian_prob, motion_prob=motion_prob)
  keys = jax.random.split(jax.random.key(0), 64)
  k, proto = degrade.random_kernels(keys, cfg)
  assert k.shape == (64, cfg.kernel_size, cfg.kernel_size)
  assert float(k.min()) >= 0.0
  np.testing.assert_allclose(np.asarray(k.sum(axis=(1, 2))), 1.0, atol=1e-6)
  if motion_prob == 0.0:
    assert (np.asarray(proto) == 0).all()
  if gaussian_prob == 0.0:
    assert (np.asarray(proto) == 1).all()


def test_constant_image_stays_constant():
  sharp = jnp.full((4, 32, 32, 3), 0.37, jnp.float32)
  blurry, _, info = degrade.degrade(jax.random.key(1), sharp, _cfg())
  np.testing.assert_allclose(np.asarray(blurry), 0.37, atol=1e-6)


def test_delta_blurs_into_the_kernel():
  ksize = 15
  img = np.zeros((3, 41, 41, 1), np.float32)
  img[:, 20, 20] = 1.0
  k, _ = degrade.random_kernels(jax.random.split(jax.random.key(2), 3), _cfg())
  out = np.asarray(degrade.convolve(jnp.asarray(img), k))
  np.testing.assert_allclose(out[:, 13:28, 13:28, 0], np.asarray(k), atol=1e-7)
  assert np.abs(out[:, :13]).max() < 1e-7 and ksize == k.shape[-1]


def test_convolution_matches_float64_scipy_with_reflect_borders():
  rng = np.random.default_rng(0)
  img = rng.uniform(size=(2, 24, 20, 3))
  k = np.asarray(degrade.random_kernels(jax.random.split(jax.random.key(3), 2), _cfg())[0])
  out = np.asarray(degrade.convolve(jnp.asarray(img, jnp.float32), jnp.asarray(k)))
  p = k.shape[-1] // 2
  for b in range(2):
    for c in range(3):
      padded = np.pad(img[b, :, :, c], p, mode="reflect")
      ref = signal.convolve2d(padded, k[b].astype(np.float64), mode="valid")
      np.testing.assert_allclose(out[b, :, :, c], ref, rtol=1e-5, atol=1e-6)


def test_motion_kernel_has_the_requested_length_and_angle():
  length, angle = 9.0, 30.0
  k = np.asarray(degrade.motion_kernels(jnp.array([length]), jnp.array([angle]), 15)[0], np.float64)
  g = np.arange(15) - 7.0
  ys, xs = np.meshgrid(g, g, indexing="ij")
  d = np.array([np.cos(np.deg2rad(angle)), -np.sin(np.deg2rad(angle))])
  along = xs * d[0] + ys * d[1]
  across = xs * -d[1] + ys * d[0]
  # a uniform segment of length L has variance L^2/12 along it (+1/6 from bilinear splatting)
  var_along = (k * along**2).sum()
  assert abs(var_along - (length**2 / 12 + 1 / 6)) < 0.2
  assert (k * across**2).sum() < 0.3  # thin across the motion


def test_gaussian_kernel_matches_numpy():
  sigma = 1.7
  k = np.asarray(degrade.gaussian_kernels(jnp.array([sigma]), 11)[0])
  g = np.arange(11) - 5.0
  ref = np.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * sigma**2))
  np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5)


def test_per_sample_keys_make_blur_independent_of_batch():
  sharp = jax.random.uniform(jax.random.key(4), (6, 32, 32, 3))
  keys = jax.random.split(jax.random.key(5), 6)
  full, _, _ = degrade.degrade(keys, sharp, _cfg())
  part, _, _ = degrade.degrade(keys[2:4], sharp[2:4], _cfg())
  np.testing.assert_allclose(np.asarray(full[2:4]), np.asarray(part), atol=1e-6)


def test_even_kernel_size_is_rejected():
  with pytest.raises(ValueError, match="kernel_size must be odd"):
    degrade.random_kernels(jax.random.split(jax.random.key(0), 2), _cfg(kernel_size=8))
