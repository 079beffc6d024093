"""Applying per-sample kernels: true 2-D convolution, size preserved, no dark frame.

Two exact paths, chosen statically by kernel size: direct grouped convolution (small kernels) and
FFT (large kernels). Both pad the borders (reflect by default, or edge/symmetric) by K // 2, convolve,
and keep the 'valid' part, so a constant image stays constant and a delta blurs into the kernel.
"""
import functools

import jax
import jax.numpy as jnp

# Kernel size from which `convolve(method="auto")` uses the FFT when config.blur.fft_min_kernel_size
# is 0 ("auto"), per backend. On CPU XLA's grouped convolution is slow and the FFT was faster for
# every kernel size measured (7 to 65; benchmarks/degrade.py --crossover); on GPU the direct
# depthwise convolution is a tuned primitive, so small kernels stay direct there. On TPU always
# direct: compiled for v5e (fdeblur.aot, 8 per chip) the direct blur is 0.2 % of chrysos2017's
# step FLOPs (K 21, 128²; FFT 0.7 %) and 1.7 GFLOP per 256² image at K 65 (< 1 % of a DeblurGAN
# step), while TPUs run FFTs slowly and XLA:TPU took 12x longer to compile the FFT blur (467 s
# against 38 s).
FFT_MIN_KERNEL_SIZE = {"cpu": 1, "gpu": 21, "tpu": 1 << 30}
BORDERS = ("reflect", "symmetric", "edge")


def _pad(images: jax.Array, pad: int, border: str) -> jax.Array:
  if border not in BORDERS:
    raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
  # jnp.pad reflects repeatedly, as NumPy does, when the pad exceeds the image.
  return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=border)


def convolve_direct(images: jax.Array, kernels: jax.Array, border: str = "reflect") -> jax.Array:
  """images: [B, H, W, C]; kernels: [B, K, K] (K odd) -> [B, H, W, C]. Grouped convolution."""
  ksize = kernels.shape[-1]
  padded = _pad(images, ksize // 2, border)
  channels = images.shape[-1]

  def one(img, k):
    # conv_general_dilated correlates; flipping the kernel makes it a convolution, so a delta
    # image blurs into exactly the kernel.
    rhs = jnp.tile(k[::-1, ::-1, None, None], (1, 1, 1, channels)).astype(img.dtype)
    return jax.lax.conv_general_dilated(
        img[None], rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)[0]

  return jax.vmap(one)(padded, kernels)


def _fast_size(n: int) -> int:
  """Smallest 5-smooth integer >= n (FFT-friendly)."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


def convolve_fft(images: jax.Array, kernels: jax.Array, border: str = "reflect") -> jax.Array:
  """Same result as `convolve_direct` through real FFTs: pad by K // 2, zero-extend to an
  FFT-friendly size N >= H + K - 1 (no circular wrap reaches the kept part), multiply, crop."""
  ksize = kernels.shape[-1]
  pad = ksize // 2
  h, w = images.shape[1:3]
  padded = _pad(images.astype(jnp.float32), pad, border)
  nh, nw = _fast_size(h + 2 * pad), _fast_size(w + 2 * pad)
  spec_x = jnp.fft.rfft2(padded, s=(nh, nw), axes=(1, 2))
  spec_k = jnp.fft.rfft2(kernels.astype(jnp.float32), s=(nh, nw), axes=(1, 2))
  full = jnp.fft.irfft2(spec_x * spec_k[..., None], s=(nh, nw), axes=(1, 2))
  return full[:, 2 * pad:2 * pad + h, 2 * pad:2 * pad + w].astype(images.dtype)


def fft_threshold(value: int = 0, platform: str | None = None) -> int:
  """The FFT threshold: `value` if positive, else the default of `platform` (the one the
  program is compiled for; default: JAX's default backend)."""
  if value and value > 0:
    return int(value)
  return FFT_MIN_KERNEL_SIZE.get(platform or jax.default_backend(), 21)


@functools.partial(jax.jit, static_argnames=("method", "fft_min_kernel_size", "border",
                                             "platform"))
def convolve(images: jax.Array, kernels: jax.Array, *, method: str = "auto",
             fft_min_kernel_size: int = 0, border: str = "reflect",
             platform: str | None = None) -> jax.Array:
  """True 2-D convolution of each image with its own kernel, size preserved.

  images: [B, H, W, C]; kernels: [B, K, K], K odd. method "auto" picks the FFT when
  K >= fft_min_kernel_size (0: the backend's default, see FFT_MIN_KERNEL_SIZE), else direct
  convolution; a static choice, K being a shape.
  """
  ksize = kernels.shape[-1]
  if ksize % 2 != 1 or kernels.shape[-2] != ksize:
    raise ValueError(f"kernels must be square with an odd size, got {kernels.shape[1:]}")
  if method == "auto":
    method = "fft" if ksize >= fft_threshold(fft_min_kernel_size, platform) else "direct"
  if method == "fft":
    return convolve_fft(images, kernels, border)
  if method == "direct":
    return convolve_direct(images, kernels, border)
  raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
