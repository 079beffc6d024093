"""Sensor noise statistics on the device, and the host-side JPEG transform."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import config_lib, degrade
from fdeblur.degrade import noise
from input_pipeline import transforms

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


def test_jpeg_roundtrip_keeps_shape_and_dtype_and_changes_pixels():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
  t = transforms.RandomJpeg(quality=(20, 40))
  out = t.random_map({"image": img, "label": 7}, np.random.default_rng(1))
  assert out["label"] == 7
  assert out["image"].shape == img.shape and out["image"].dtype == np.uint8
  assert np.abs(out["image"].astype(int) - img).mean() > 5  # noise does not survive JPEG at q 20-40
  again = t.random_map({"image": img, "label": 7}, np.random.default_rng(1))
  np.testing.assert_array_equal(out["image"], again["image"])  # same rng, same result
  # frames [T, H, W, C], float images, grayscale
  frames = rng.uniform(size=(3, 16, 16, 1)).astype(np.float32)
  outf = transforms.RandomJpeg(key="frames", quality=(50, 50)).random_map(
      {"frames": frames}, np.random.default_rng(2))["frames"]
  assert outf.shape == frames.shape and outf.dtype == np.float32
  assert 0 < np.abs(outf - frames).mean() < 0.3
  # prob 0 changes nothing; higher quality is closer to the original
  assert transforms.RandomJpeg(prob=0.0).random_map({"image": img}, rng)["image"] is img
  smooth = np.repeat(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], 32, 0).repeat(3, 2)
  err = [np.abs(transforms.jpeg_roundtrip(smooth, q).astype(int) - smooth).mean() for q in (10, 90)]
  assert err[0] > err[1]


def test_jpeg_from_config():
  cfg = config_lib.base_config().blur
  cfg.update(jpeg_prob=0.5, jpeg_quality=(40, 60))
  t = transforms.RandomJpeg.from_config(cfg)
  assert t.quality == (40, 60) and t.prob == 0.5
  with pytest.raises(ValueError, match="quality"):
    transforms.RandomJpeg(quality=(0, 50))
