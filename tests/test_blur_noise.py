"""Sensor noise statistics on the device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import config_lib, degrade
from fdeblur.degrade import noise

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
