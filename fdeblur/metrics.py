"""Image quality metrics (dm-pix). Inputs are float images in [0, 1], [B, H, W, C]."""
import dm_pix as pix
import jax.numpy as jnp


def psnr(pred, target):
  """Per-image PSNR in dB (max value 1); identical images give +inf."""
  return pix.psnr(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))


def ssim(pred, target):
  """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)."""
  return pix.ssim(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), max_val=1.0)
