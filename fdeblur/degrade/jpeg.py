"""JPEG compression on the device, for the blur pipeline: baseline JPEG's lossy steps (JFIF YCbCr,
4:2:0 chroma subsampling, 8x8 DCT, quantisation with the standard tables scaled by quality as
libjpeg does, 8-bit output), per sample and jit-compilable. Entropy coding is lossless and left
out. It matches a real codec (Pillow/libjpeg) closely but not bit for bit (libjpeg's integer DCT
and "fancy" chroma upsampling differ in rounding); `input_pipeline.transforms.RandomJpeg` is the
real codec, for data on disk.
"""
import jax
import jax.numpy as jnp
import numpy as np

# ITU-T T.81 Annex K tables (quality 50).
LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
CHROMA = np.array([
    [17, 18, 24, 47, 99, 99, 99, 99], [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99], [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99], [99, 99, 99, 99, 99, 99, 99, 99]], np.float32)


def _dct_matrix() -> np.ndarray:
  k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
  d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
  d[0] /= np.sqrt(2)
  return d.astype(np.float32)


DCT = _dct_matrix()


def quant_tables(quality: jax.Array) -> tuple[jax.Array, jax.Array]:
  """libjpeg's `jpeg_quality_scaling`: quality [B] in 1..100 -> luma, chroma tables [B, 8, 8]."""
  q = jnp.clip(jnp.round(quality), 1, 100)
  scale = jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]

  def table(base):
    return jnp.clip(jnp.floor((base[None] * scale + 50.0) / 100.0), 1.0, 255.0)

  return table(LUMA), table(CHROMA)


def _blockwise(x, fn):
  """x [B, H, W] (H, W multiples of 8) -> fn on [B, H/8, W/8, 8, 8] blocks -> [B, H, W]."""
  b, h, w = x.shape
  blocks = x.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
  return fn(blocks).transpose(0, 1, 3, 2, 4).reshape(b, h, w)


def _quantise(plane, table):
  """DCT, quantise with table [B, 8, 8], dequantise, inverse DCT; plane [B, H, W] centred at 0."""
  d = jnp.asarray(DCT)

  def fn(blocks):
    coef = jnp.einsum("ij,bxyjk,lk->bxyil", d, blocks, d)
    t = table[:, None, None]
    coef = jnp.round(coef / t) * t
    return jnp.einsum("ji,bxyjk,kl->bxyil", d, coef, d)

  return _blockwise(plane, fn)


def jpeg(images: jax.Array, quality: jax.Array) -> jax.Array:
  """images [B, H, W, 3] float in [0, 1] -> JPEG-compressed at `quality` [B] (1..100), float32
  in [0, 1] on the 8-bit grid. Any H, W (edge-padded to multiples of 16, then cropped)."""
  b, h, w, _ = images.shape
  ph, pw = -h % 16, -w % 16
  x = jnp.pad(jnp.clip(images, 0.0, 1.0) * 255.0, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  x = jnp.round(x)
  r, g, bl = x[..., 0], x[..., 1], x[..., 2]
  y = 0.299 * r + 0.587 * g + 0.114 * bl
  cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
  cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
  hh, ww = y.shape[1:]

  def down(c):  # 4:2:0, box filter as libjpeg's default downsampler
    return c.reshape(b, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))

  def up(c):  # bilinear, centred (close to libjpeg's triangular "fancy" upsampling)
    return jax.image.resize(c, (b, hh, ww), "linear")

  t_luma, t_chroma = quant_tables(quality)
  y = _quantise(y - 128.0, t_luma) + 128.0
  cb = up(_quantise(down(cb) - 128.0, t_chroma) + 128.0) - 128.0
  cr = up(_quantise(down(cr) - 128.0, t_chroma) + 128.0) - 128.0
  rgb = jnp.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
  rgb = jnp.clip(jnp.round(rgb), 0.0, 255.0) / 255.0
  return rgb[:, :h, :w].astype(jnp.float32)


def random_jpeg(key: jax.Array, images: jax.Array, prob: float,
                quality: tuple[float, float]) -> jax.Array:
  """Each sample, with probability `prob`, JPEG-compressed at a quality drawn uniformly from
  `quality` (lo, hi); the others pass unchanged. key: one typed key per sample [B]."""
  u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(key)
  lo, hi = (float(q) for q in quality)
  if not 1 <= lo <= hi <= 100:
    raise ValueError(f"config.blur.jpeg_quality must satisfy 1 <= lo <= hi <= 100, got {quality}")
  compressed = jpeg(images, lo + (hi - lo) * u[:, 1])
  return jnp.where((u[:, 0] < prob)[:, None, None, None], compressed, images)
