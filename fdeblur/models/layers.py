"""Building blocks shared by the papers' networks (Flax NNX).

Parameters are float32; `dtype` sets the computation dtype (bfloat16 on accelerators).
"""
import jax
import jax.numpy as jnp
from flax import nnx

# DeblurGAN / pix2pix initialise every convolution with N(0, 0.02).
normal_init = nnx.initializers.normal(stddev=0.02)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of the spatial axes of an NHWC tensor (PyTorch's ReflectionPad2d)."""
  if pad == 0:
    return x
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


class InstanceNorm(nnx.Module):
  """Instance normalisation without affine parameters, as DeblurGAN uses it."""

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    self.norm = nnx.InstanceNorm(
        num_features, epsilon=1e-5, use_scale=False, use_bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.norm(x)


class ConvNormAct(nnx.Module):
  """[reflect pad] -> conv -> instance norm -> ReLU."""

  def __init__(self, cin, cout, kernel_size, *, stride=1, reflect=0, dtype=None, rngs):
    self.reflect = reflect
    padding = "VALID" if reflect else ((kernel_size - 1) // 2,) * 2
    self.conv = nnx.Conv(cin, cout, (kernel_size, kernel_size), strides=stride,
                         padding=padding if reflect else (padding, padding),
                         kernel_init=normal_init, dtype=dtype, rngs=rngs)
    self.norm = InstanceNorm(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(reflect_pad(x, self.reflect))))


class UpConvNormAct(nnx.Module):
  """3x3 stride-2 transposed conv (PyTorch padding=1, output_padding=1) -> norm -> ReLU."""

  def __init__(self, cin, cout, *, dtype=None, rngs):
    # Same geometry as ConvTranspose2d(k=3, s=2, p=1, output_padding=1): exactly doubles H, W.
    self.conv = nnx.ConvTranspose(cin, cout, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                                  kernel_init=normal_init, dtype=dtype, rngs=rngs)
    self.norm = InstanceNorm(cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.norm(self.conv(x)))


class ResnetBlock(nnx.Module):
  """DeblurGAN's residual block: pad-conv3-norm-ReLU-[dropout]-pad-conv3-norm, plus identity."""

  def __init__(self, dim, *, dropout=0.0, dtype=None, rngs):
    self.conv1 = nnx.Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                          dtype=dtype, rngs=rngs)
    self.norm1 = InstanceNorm(dim, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)  # its key comes with each call (no RNG in the state)
    self.conv2 = nnx.Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                          dtype=dtype, rngs=rngs)
    self.norm2 = InstanceNorm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, x, rngs=None):
    y = jax.nn.relu(self.norm1(self.conv1(reflect_pad(x, 1))))
    y = self.dropout(y, rngs=rngs)
    y = self.norm2(self.conv2(reflect_pad(y, 1)))
    return x + y
