"""The degradations the shipped face model trains with: trajectory extents, the sharp share, and
JPEG on the device (checked against Pillow's real codec)."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fdeblur import config_lib, degrade
from fdeblur.degrade import jpeg as djpeg
from fdeblur.degrade import kernels


def _psnr(a, b):
  return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def _blur_cfg(**kw):
  c = config_lib.base_config().blur
  c.gaussian_prob, c.motion_prob, c.trajectory_prob = 0.0, 0.0, 1.0
  c.trajectory_canvas, c.trajectory_iters, c.trajectory_max_len = 24, 200, 20.0
  c.trajectory_fractions, c.trajectory_fraction_probs = (1.0,), (1.0,)
  for k, v in kw.items():
    c[k] = v
  return c


def test_trajectory_extent_lands_in_the_range_and_kernels_span_it():
  cfg = _blur_cfg(trajectory_extent=(2.0, 12.0))
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  draws = kernels.trajectory_draws(keys, cfg)
  kers, paths, _ = kernels.trajectory_kernels(draws, cfg)
  ext = np.asarray(kernels.path_extent(paths, jnp.ones(paths.shape[:2])))
  want = 2.0 + 10.0 * np.asarray(draws["extent_u"])
  np.testing.assert_allclose(ext, want, rtol=1e-4, atol=1e-4)
  kers = np.asarray(kers)
  np.testing.assert_allclose(kers.sum((1, 2)), 1.0, atol=1e-5)
  for k, e in zip(kers, ext):  # the PSF's support spans the extent (bilinear: +1 or +2 px)
    cols, rows = np.nonzero(k.sum(0) > 0)[0], np.nonzero(k.sum(1) > 0)[0]
    side = max(np.ptp(cols), np.ptp(rows))
    assert e - 1e-3 <= side <= e + 2


def test_trajectory_extent_beyond_the_support_is_refused():
  with pytest.raises(ValueError, match="trajectory_extent"):
    kernels.random_trajectory_kernels(jax.random.split(jax.random.PRNGKey(0), 2),
                                      _blur_cfg(trajectory_extent=(1.0, 30.0)))


def test_sharp_share_leaves_that_share_untouched():
  image = skdata.astronaut()[100:164, 150:214]
  batch = np.repeat(image[None], 200, 0)
  blurry, sharp, info = degrade.degrade(jax.random.PRNGKey(3), batch,
                                        _blur_cfg(trajectory_extent=(4.0, 8.0), sharp_prob=0.3))
  same = np.all(np.abs(np.asarray(blurry) - np.asarray(sharp)) < 1e-6, axis=(1, 2, 3))
  delta = np.asarray(info["kernel"]).max((1, 2)) > 0.999
  np.testing.assert_array_equal(same, delta)
  assert 0.2 < same.mean() < 0.4
  # sharp_prob 0 draws the same kernels for the others: the share is its own random stream
  b0, _, _ = degrade.degrade(jax.random.PRNGKey(3), batch, _blur_cfg(trajectory_extent=(4.0, 8.0)))
  np.testing.assert_allclose(np.asarray(b0)[~same], np.asarray(blurry)[~same], atol=1e-6)


@pytest.mark.parametrize("quality", [25, 60, 90])
def test_device_jpeg_is_close_to_pillow(quality):
  image = skdata.astronaut()[96:224, 140:268]  # the face: skin, hair, edges
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=quality)
  pil = np.asarray(Image.open(buf), np.float32) / 255.0
  x = image.astype(np.float32) / 255.0
  ours = np.asarray(djpeg.jpeg(jnp.asarray(x[None]), jnp.array([quality], jnp.float32))[0])
  # far closer to the real codec's output than the codec's output is to its input
  assert _psnr(ours, pil) > 39.0
  assert _psnr(ours, pil) > _psnr(x, pil) + 6.0
  # and as lossy as the real codec (within 1 dB)
  assert abs(_psnr(ours, x) - _psnr(pil, x)) < 1.0
  np.testing.assert_allclose(ours * 255.0, np.round(ours * 255.0), atol=1e-3)  # 8-bit output


def test_quant_tables_follow_libjpeg_scaling():
  luma, chroma = djpeg.quant_tables(jnp.array([50.0, 100.0, 10.0]))
  np.testing.assert_array_equal(np.asarray(luma[0]), djpeg.LUMA)  # quality 50 = the base table
  assert np.asarray(luma[1]).max() == 1.0 and np.asarray(chroma[1]).max() == 1.0
  np.testing.assert_array_equal(np.asarray(luma[2]),
                                np.clip(np.floor((djpeg.LUMA * 500 + 50) / 100), 1, 255))


def test_jpeg_share_in_degrade():
  image = skdata.astronaut()[100:164, 150:214]
  batch = np.repeat(image[None], 40, 0)
  cfg = _blur_cfg(trajectory_extent=(0.0, 0.0), sharp_prob=1.0, jpeg_prob=0.5,
                  jpeg_quality=(20, 30))
  blurry, sharp, _ = degrade.degrade(jax.random.PRNGKey(0), batch, cfg)
  changed = np.abs(np.asarray(blurry) - np.asarray(sharp)).max(axis=(1, 2, 3)) > 1e-6
  assert 0.25 < changed.mean() < 0.75  # only the JPEG share differs from the sharp input
  with pytest.raises(ValueError, match="jpeg_quality"):
    degrade.degrade(jax.random.PRNGKey(0), batch, _blur_cfg(jpeg_prob=0.5, jpeg_quality=(0, 30)))
