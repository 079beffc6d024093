"""Kernel families and the two convolution paths (direct, FFT) against float64 SciPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from fdeblur import config_lib, degrade
from fdeblur.degrade import apply, kernels

FAMILIES = {
    "gaussian": dict(gaussian_prob=1.0, motion_prob=0.0),
    "anisotropic": dict(gaussian_prob=1.0, motion_prob=0.0, gaussian_anisotropic_prob=1.0),
    "motion": dict(gaussian_prob=0.0, motion_prob=1.0),
    "trajectory": dict(gaussian_prob=0.0, motion_prob=0.0, trajectory_prob=1.0,
                       trajectory_canvas=24, trajectory_max_len=20.0, trajectory_iters=400),
}


def _cfg(**kw):
  c = config_lib.base_config().blur
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def family_kernels():
  keys = jax.random.split(jax.random.key(0), 12)
  return {name: _kernels(keys, _cfg(**kw)) for name, kw in FAMILIES.items()}


def _kernels(keys, cfg):
  """The kernels `degrade` draws for a batch of len(keys) images (its info["kernel"])."""
  images = jnp.zeros((len(keys), 32, 32, 1), jnp.float32)
  return np.asarray(degrade.degrade(keys, images, cfg)[2]["kernel"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_kernel_is_nonnegative_and_sums_to_one(family_kernels, family):
  k = family_kernels[family]
  assert k.min() >= 0.0
  np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
  if family == "trajectory":  # the 1/1000 exposure is a (near) delta, as in the reference
    assert (k.max(axis=(1, 2)) < 0.5).sum() >= 6
  else:
    assert (k.max(axis=(1, 2)) < 1.0).all()  # a real blur, not a delta


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("family", ["anisotropic", "trajectory"])
def test_delta_blurs_into_exactly_the_kernel(family_kernels, family, method):
  k = family_kernels[family][:4]
  size = k.shape[-1]
  n = size + 16
  img = np.zeros((4, n, n, 2), np.float32)
  img[:, n // 2, n // 2] = 1.0
  out = np.array(apply.convolve(img, k, method=method))
  lo = n // 2 - size // 2
  for c in range(2):
    np.testing.assert_allclose(out[:, lo:lo + size, lo:lo + size, c], k, atol=1e-6)
  out[:, lo:lo + size, lo:lo + size] = 0
  assert np.abs(out).max() < 1e-6


@pytest.mark.parametrize("family", ["gaussian", "trajectory"])
@pytest.mark.parametrize("border", ["reflect", "edge"])
def test_direct_and_fft_match_float64_scipy(family_kernels, family, border):
  k = family_kernels[family][:2].astype(np.float64)
  img = np.random.default_rng(0).uniform(size=(2, 30, 26, 3))
  p = k.shape[-1] // 2
  ref = np.stack([np.stack([signal.convolve2d(np.pad(img[b, :, :, c], p, mode=border), k[b],
                                              mode="valid") for c in range(3)], -1)
                  for b in range(2)])
  for method in ("direct", "fft"):
    out = np.asarray(apply.convolve(jnp.asarray(img, jnp.float32), jnp.asarray(k, jnp.float32),
                                      method=method, border=border), np.float64)
    assert out.shape == img.shape
    rel = np.abs(out - ref) / np.abs(ref)
    assert rel.max() < 1e-5, (method, rel.max())


def test_fft_is_chosen_statically_by_kernel_size():
  img = jnp.ones((1, 20, 20, 1))
  small = jnp.zeros((1, 5, 5)).at[0, 2, 2].set(1.0)
  big = jnp.zeros((1, 25, 25)).at[0, 12, 12].set(1.0)
  hlo = lambda k, t: jax.jit(lambda i, kk: apply.convolve(i, kk, fft_min_kernel_size=t)).lower(
      img, k).as_text()
  assert "fft" not in hlo(small, 21) and "convolution" in hlo(small, 21)
  assert "fft" in hlo(big, 21) and "convolution" not in hlo(big, 21)
  assert "fft" in hlo(small, 5)
  if jax.default_backend() == "cpu":  # 0 = the backend's default: on CPU the FFT always wins
    assert "fft" in hlo(small, 0)


def test_constant_image_stays_constant_with_large_kernels_no_dark_frame():
  cfg = _cfg(**FAMILIES["trajectory"], fft_min_kernel_size=11)
  sharp = jnp.full((3, 20, 20, 3), 0.61, jnp.float32)  # smaller than the 25 px kernel
  blurry, _, info = degrade.degrade(jax.random.key(1), sharp, cfg)
  assert info["kernel"].shape == (3, 25, 25)
  np.testing.assert_allclose(np.asarray(blurry), 0.61, atol=2e-6)


def test_anisotropic_gaussian_matches_numpy():
  sx, sy, angle = 2.5, 0.8, 30.0
  k = np.asarray(kernels.gaussian_kernels(jnp.array([sx]), 15, jnp.array([sy]),
                                          jnp.array([angle]))[0])
  g = np.arange(15) - 7.0
  ys, xs = np.meshgrid(g, g, indexing="ij")
  t = np.deg2rad(angle)
  along = xs * np.cos(t) - ys * np.sin(t)  # image rows point down: counter-clockwise on screen
  across = xs * np.sin(t) + ys * np.cos(t)
  ref = np.exp(-0.5 * ((along / sx) ** 2 + (across / sy) ** 2))
  np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5, atol=1e-9)
  # its long axis points at 30 degrees: the variance along it is the largest
  assert (k * along**2).sum() > 5 * (k * across**2).sum()
  # equal sigmas give the isotropic kernel whatever the angle
  iso = kernels.gaussian_kernels(jnp.array([1.3]), 9)
  rot = kernels.gaussian_kernels(jnp.array([1.3]), 9, jnp.array([1.3]), jnp.array([77.0]))
  np.testing.assert_allclose(np.asarray(iso), np.asarray(rot), atol=1e-7)


def test_kernel_support_follows_the_mixture():
  assert kernels.kernel_support(_cfg()) == 15
  assert kernels.kernel_support(_cfg(trajectory_prob=0.2)) == 65  # canvas 64, made odd
  assert kernels.kernel_support(_cfg(trajectory_prob=0.2, trajectory_canvas=9)) == 15
  assert kernels.kernel_support(_cfg(trajectory_prob=0.2, trajectory_canvas=16, kernel_size=7)) == 17
  with pytest.raises(ValueError, match="odd"):
    kernels.kernel_support(_cfg(kernel_size=8))


def test_motion_kernel_has_the_requested_length_and_angle():
  length, angle = 9.0, 30.0
  k = np.asarray(kernels.motion_kernels(jnp.array([length]), jnp.array([angle]), 15)[0],
                 np.float64)
  g = np.arange(15) - 7.0
  ys, xs = np.meshgrid(g, g, indexing="ij")
  d = np.array([np.cos(np.deg2rad(angle)), -np.sin(np.deg2rad(angle))])
  along = xs * d[0] + ys * d[1]
  across = xs * -d[1] + ys * d[0]
  # a uniform segment of length L has variance L^2/12 along it (+1/6 from bilinear splatting)
  var_along = (k * along**2).sum()
  assert abs(var_along - (length**2 / 12 + 1 / 6)) < 0.2
  assert (k * across**2).sum() < 0.3  # thin across the motion


def test_isotropic_gaussian_kernel_matches_numpy():
  sigma = 1.7
  k = np.asarray(kernels.gaussian_kernels(jnp.array([sigma]), 11)[0])
  g = np.arange(11) - 5.0
  ref = np.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * sigma**2))
  np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-5)


def test_even_kernel_size_is_rejected():
  with pytest.raises(ValueError, match="kernel_size must be odd"):
    _kernels(jax.random.split(jax.random.key(0), 2), _cfg(kernel_size=8))
