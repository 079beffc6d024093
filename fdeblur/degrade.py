"""Blur synthesis on the device: random per-sample kernels applied inside the jit-compiled step.

Every function is batched with per-sample randomness and static shapes, so one compilation serves
all steps. `degrade(key, sharp, config)` is the single entry point training and evaluation use;
new protocols (trajectories, frame averaging) are added as more kernel families in `random_kernels`
or more branches in `degrade`.
"""
import jax
import jax.numpy as jnp
import ml_collections

PROTOCOLS = ("gaussian", "motion")


def _grid(kernel_size: int) -> jax.Array:
  """Pixel coordinates of a kernel's support, centred on its middle pixel."""
  return jnp.arange(kernel_size, dtype=jnp.float32) - (kernel_size - 1) / 2.0


def gaussian_kernels(sigma: jax.Array, kernel_size: int) -> jax.Array:
  """Isotropic Gaussians. sigma: [B] pixels -> [B, K, K], each summing to 1."""
  g = _grid(kernel_size)
  r2 = g[:, None] ** 2 + g[None, :] ** 2
  k = jnp.exp(-r2[None] / (2.0 * sigma[:, None, None] ** 2))
  return k / k.sum(axis=(1, 2), keepdims=True)


def splat(points: jax.Array, weights: jax.Array, kernel_size: int) -> jax.Array:
  """Bilinear splatting of weighted sub-pixel points into a PSF.

  points: [B, M, 2] as (x, y) offsets from the kernel centre in pixels; weights: [B, M].
  Returns [B, K, K] normalised to sum 1 (points outside the support are dropped).
  """
  g = _grid(kernel_size)
  wx = jnp.maximum(0.0, 1.0 - jnp.abs(g[None, None, :] - points[..., 0:1]))  # [B, M, K]
  wy = jnp.maximum(0.0, 1.0 - jnp.abs(g[None, None, :] - points[..., 1:2]))
  k = jnp.einsum("bmi,bmj,bm->bij", wy, wx, weights)
  return k / jnp.maximum(k.sum(axis=(1, 2), keepdims=True), 1e-12)


def motion_kernels(length: jax.Array, angle_deg: jax.Array, kernel_size: int,
                   num_points: int | None = None) -> jax.Array:
  """Anti-aliased linear motion: a uniformly exposed segment of `length` pixels at `angle_deg`.

  The segment is sampled densely (sub-pixel) and splatted bilinearly, so fractional lengths and any
  angle give a smooth, exactly normalised PSF. length, angle_deg: [B] -> [B, K, K].
  """
  m = num_points or 8 * kernel_size
  t = (jnp.arange(m, dtype=jnp.float32) + 0.5) / m - 0.5  # in (-1/2, 1/2)
  theta = jnp.deg2rad(angle_deg)
  d = jnp.stack([jnp.cos(theta), -jnp.sin(theta)], axis=-1)  # image y axis points down
  pts = length[:, None, None] * t[None, :, None] * d[:, None, :]
  return splat(pts, jnp.ones(pts.shape[:2]), kernel_size)


def _uniform(key, shape, bounds):
  lo, hi = bounds
  return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def random_kernels(keys: jax.Array, cfg: ml_collections.ConfigDict):
  """One kernel per sample from the configured mixture, drawn from that sample's own key, so a
  sample's blur does not depend on the batch it is in. keys: [B] -> ([B, K, K], protocol [B])."""
  ksize = cfg.kernel_size
  if ksize % 2 != 1:
    raise ValueError(f"config.blur.kernel_size must be odd, got {ksize}")
  probs = jnp.array([cfg.gaussian_prob, cfg.motion_prob], jnp.float32)
  max_len = float(ksize - 1)

  def one(key):
    k_proto, k_sigma, k_len, k_ang = jax.random.split(key, 4)
    proto = jax.random.choice(k_proto, len(PROTOCOLS), p=probs / probs.sum())
    sigma = _uniform(k_sigma, (1,), cfg.gaussian_sigma)
    length = jnp.minimum(_uniform(k_len, (1,), cfg.motion_length), max_len)
    angle = _uniform(k_ang, (1,), cfg.motion_angle)
    kernel = jnp.where(proto == 0, gaussian_kernels(sigma, ksize)[0],
                       motion_kernels(length, angle, ksize)[0])
    return kernel, proto

  return jax.vmap(one)(keys)


def convolve(images: jax.Array, kernels: jax.Array) -> jax.Array:
  """True 2-D convolution of each image with its own kernel, size preserved.

  images: [B, H, W, C]; kernels: [B, K, K]. Borders are reflect-padded before a 'valid'
  convolution, so no dark frame appears. Direct (grouped) convolution: exact for any K.
  """
  ksize = kernels.shape[-1]
  pad = ksize // 2
  if min(images.shape[1:3]) <= pad:
    raise ValueError(f"images {images.shape[1:3]} are too small for a {ksize}x{ksize} kernel")
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  channels = images.shape[-1]

  def one(img, k):
    # conv_general_dilated correlates; flipping the kernel makes it a convolution, so a delta
    # image blurs into exactly the kernel.
    rhs = jnp.tile(k[::-1, ::-1, None, None], (1, 1, 1, channels)).astype(img.dtype)
    return jax.lax.conv_general_dilated(
        img[None], rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)[0]

  return jax.vmap(one)(padded, kernels)


def degrade(key: jax.Array, sharp: jax.Array, cfg: ml_collections.ConfigDict):
  """sharp: [B, H, W, C] in [0, 1] -> (blurry, sharp, info). cfg is `config.blur`.

  `key` is one key for the batch (split per sample) or a [B] array of per-sample keys.
  """
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # raw uint32 key data, [2] or [B, 2]
  keys = jax.random.split(key, sharp.shape[0]) if key.ndim == 0 else key
  kernels, proto = random_kernels(keys, cfg)
  blurry = jnp.clip(convolve(sharp, kernels), 0.0, 1.0)
  return blurry, sharp, {"kernel": kernels, "protocol": proto}
