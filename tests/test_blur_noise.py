"""Sensor noise statistics on the device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import config_lib, degrade
from fdeblur.degrade import jpeg, noise

N = 64 * 64 * 3  # pixels per sample: the sample variance is within ~3 % (2 sqrt(2 / N) = 2.6 %)


def _check(y, mean, var):
  y = np.asarray(y, np.float64).reshape(len(mean), -1)
  np.testing.assert_allclose(y.mean(axis=1), mean, atol=float(4 * np.sqrt(np.max(var) / N)))
  np.testing.assert_allclose(y.var(axis=1), var, rtol=0.05)


def test_gaussian_noise_mean_and_variance():
  sigma = np.array([0.01, 0.05, 0.1, 0.2])
  x = jnp.full((4, 64, 64, 3), 0.4)
  y = jax.jit(noise.gaussian_noise)(jax.random.key(0), x, jnp.asarray(sigma))
  _check(y, np.full(4, 0.4), sigma**2)


@pytest.mark.parametrize("exact", [False, True])
def test_poisson_gaussian_noise_mean_and_variance(exact):
  level = np.array([0.1, 0.5, 0.9, 0.5])
  peak = np.array([50.0, 50.0, 200.0, 1000.0])
  sigma = np.array([0.01, 0.0, 0.02, 0.05])
  x = jnp.asarray(np.broadcast_to(level[:, None, None, None], (4, 64, 64, 3)), jnp.float32)
  y = jax.jit(lambda k, x: noise.poisson_gaussian_noise(k, x, peak, sigma, exact))(
      jax.random.key(1), x)
  _check(y, level, level / peak + sigma**2)
  y1 = np.asarray(y[1], np.float64) * peak[1]  # sigma 0: the shot noise alone, in photons
  if exact:  # real photon counts
    np.testing.assert_allclose(y1, np.round(y1), atol=1e-3)
  else:  # its normal approximation
    assert np.abs(y1 - np.round(y1)).mean() > 0.1


def test_degrade_adds_noise_deterministically():
  cfg = config_lib.base_config().blur
  cfg.update(noise="poisson_gaussian", noise_sigma=(0.02, 0.02), noise_peak=(100.0, 100.0),
             camera_response="none")
  sharp = jnp.full((2, 32, 32, 3), 0.5)
  a = degrade.degrade(jax.random.key(3), sharp, cfg)[0]
  b = degrade.degrade(jax.random.key(3), sharp, cfg)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the blur leaves a constant image constant; what is left is the noise: var = x/peak + s^2
  np.testing.assert_allclose(np.asarray(a).var(), 0.5 / 100 + 0.02**2, rtol=0.1)


def _keys_cubic(d, a=-0.75):
  d = abs(d)
  if d <= 1:
    return ((a + 2) * d - (a + 3)) * d * d + 1
  return (((d - 5) * d + 8) * d - 4) * a if d < 2 else 0.0


def _interpolated_share(n, scale, offset):
  """float64: mean over the n output pixels of sum_k w_k^2, the variance white noise keeps when
  bicubic (OpenCV's a = -0.75) resamples it at x(u) = (u + 0.5) / scale - 0.5 + offset."""
  total = 0.0
  for u in range(n):
    x = (u + 0.5) / scale - 0.5 + offset
    total += sum(_keys_cubic(x - i) ** 2 for i in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3))
  return total / n


def test_degrade_noise_of_enlarged_samples_is_enlarged_with_them():
  """A sample the pipeline enlarged s times gets its noise on the grid it was enlarged from:
  blotches of ~s px (strong neighbour correlation) with the variance bicubic interpolation
  leaves, where a sample's own grid gets grain."""
  cfg = config_lib.base_config().blur
  cfg.update(sharp_prob=1.0, noise="gaussian", noise_sigma=(0.02, 0.02),
             noise_in_linear_light=False, jpeg_prob=0.0)
  b, size, sigma = 16, 64, 0.02
  flat = jnp.full((b, size, size, 3), 0.5)
  native = np.tile(np.array([[3.0, 7.3, 2.1]], np.float32), (b, 1))
  enlarged = np.asarray(degrade.degrade(jax.random.key(1), {"image": flat, "native": native},
                                        cfg)[0], np.float64) - 0.5
  grain = np.asarray(degrade.degrade(jax.random.key(1), flat, cfg)[0], np.float64) - 0.5

  def neighbour_correlation(r):
    return (r[:, :, 1:] * r[:, :, :-1]).mean() / r.var()

  assert neighbour_correlation(enlarged) > 0.8 and abs(neighbour_correlation(grain)) < 0.05
  expected = sigma**2 * _interpolated_share(size, 3.0, 2.1) * _interpolated_share(size, 3.0, 7.3)
  np.testing.assert_allclose(enlarged.var(), expected, rtol=0.04)  # 0.74 sigma^2, grain 1
  np.testing.assert_allclose(grain.var(), sigma**2, rtol=0.04)
  # deterministic, and the samples differ
  again = np.asarray(degrade.degrade(jax.random.key(1), {"image": flat, "native": native},
                                     cfg)[0], np.float64) - 0.5
  np.testing.assert_array_equal(enlarged, again)
  assert not np.allclose(enlarged[0], enlarged[1])


def test_degrade_jpeg_of_a_sample_not_enlarged_is_on_its_own_pixels():
  """native (1, 0, 0): JPEG of the sample itself, its block grid one pixel off (the native
  grid starts a pixel before it, edge-padded), and the blur is not resampled."""
  cfg = config_lib.base_config().blur
  cfg.update(sharp_prob=1.0, noise="none", jpeg_prob=1.0, jpeg_quality=(50, 50))
  size = 32
  img = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
  native = np.array([[1.0, 0.0, 0.0]] * 2, np.float32)
  out = degrade.degrade(jax.random.key(0), {"image": img, "native": native}, cfg)[0]
  padded = np.pad(img, ((0, 0), (1, 3), (1, 3), (0, 0)), mode="edge")
  ref = jpeg.jpeg(jnp.asarray(padded), jnp.array([50.0, 50.0]))[:, 1:1 + size, 1:1 + size]
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
  # nothing to add: the blurred image passes through exactly
  cfg.update(jpeg_prob=0.0, noise="gaussian", noise_sigma=(0.0, 0.0))
  out = degrade.degrade(jax.random.key(0), {"image": img, "native": native * [2, 1, 1]}, cfg)[0]
  np.testing.assert_allclose(np.asarray(out), img, atol=1e-6)
