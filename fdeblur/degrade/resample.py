"""The pixel grid a training sample was enlarged from, as matrices (on the device, per sample).

The input pipeline enlarges a share of its patches (`Augment.enlarge_prob`): a square of side
size / s of the source patch, resized to size x size by OpenCV's bicubic, as the deblur command
enlarges small faces. A real small face got its sensor noise and JPEG at the photo's own pixel
grid, so the command enlarges those too (blotches, not grain). `degrade` therefore adds noise
and JPEG on that native grid and enlarges only their residual, with these matrices.

`native` [B, 3] per sample: (s, x offset, y offset) of `Augment`: output pixel u samples the
source patch at x(u) = (u + 0.5) / s - 0.5 + offset (cv2.resize's pixel centres); (1, 0, 0) for
a sample that was not enlarged. The native grid of a sample is K = size + 4 source pixels
j0 + k, k = 0..K-1, from j0 = floor(x(0)) - 1: enough for the 4 taps of every output pixel.
"""
import jax
import jax.numpy as jnp

CUBIC_A = -0.75  # OpenCV's INTER_CUBIC (Keys' a); jax.image's "cubic" uses -0.5


def native_size(size: int) -> int:
  return size + 4


def cubic(d: jax.Array, a: float = CUBIC_A) -> jax.Array:
  """Keys' cubic convolution kernel at distance d."""
  d = jnp.abs(d)
  near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
  far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
  return jnp.where(d <= 1.0, near, jnp.where(d < 2.0, far, 0.0))


def _distances(scale, offset, size: int):
  """[size, K] source-pixel distances x(u) - (j0 + k) along one axis of one sample."""
  x = (jnp.arange(size, dtype=jnp.float32) + 0.5) / scale - 0.5 + offset
  j0 = jnp.floor(x[0]) - 1.0
  return x[:, None] - (j0 + jnp.arange(native_size(size), dtype=jnp.float32))[None, :]


def up_matrix(scale, offset, size: int) -> jax.Array:
  """[size, K]: native grid -> enlarged sample along one axis (bicubic, as the pipeline)."""
  return cubic(_distances(scale, offset, size))


def down_matrix(scale, offset, size: int) -> jax.Array:
  """[K, size]: enlarged sample -> native grid along one axis. Each native pixel averages the
  output pixels within one source pixel of it (triangle weights, so the adjoint of linear
  interpolation); a native pixel no output pixel falls near takes its nearest output pixel."""
  d = _distances(scale, offset, size).T  # [K, size]
  tri = jnp.maximum(0.0, 1.0 - jnp.abs(d))
  total = tri.sum(axis=1, keepdims=True)
  nearest = jax.nn.one_hot(jnp.argmin(jnp.abs(d), axis=1), size, dtype=jnp.float32)
  return jnp.where(total > 1e-6, tri / jnp.maximum(total, 1e-6), nearest)


def matrices(native: jax.Array, size: int):
  """native [B, 3] -> (up_y, up_x [B, size, K], down_y, down_x [B, K, size])."""
  native = jnp.asarray(native, jnp.float32)
  s, ox, oy = native[:, 0], native[:, 1], native[:, 2]
  up = jax.vmap(up_matrix, (0, 0, None))
  down = jax.vmap(down_matrix, (0, 0, None))
  return up(s, oy, size), up(s, ox, size), down(s, oy, size), down(s, ox, size)


def to_native(images: jax.Array, down_y: jax.Array, down_x: jax.Array) -> jax.Array:
  """[B, size, size, C] -> [B, K, K, C]."""
  return jnp.einsum("bky,byxc,blx->bklc", down_y, images, down_x)


def enlarge(native_images: jax.Array, up_y: jax.Array, up_x: jax.Array) -> jax.Array:
  """[B, K, K, C] -> [B, size, size, C]."""
  return jnp.einsum("byk,bklc,bxl->byxc", up_y, native_images, up_x)
