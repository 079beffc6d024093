"""Building blocks shared by the papers' networks (Flax NNX).

Mixed precision: parameters are float32; `dtype` sets the computation dtype (bfloat16 on
accelerators) of convolutions, whose products accumulate into float32 outputs (`Conv`,
`ConvTranspose`); batch and instance norms compute in float32 and emit the computation dtype.
Every generator maps images in [0, 1] to its working range with `to_signed` and back with
`to_unit_interval` (float32 out).
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

# DeblurGAN / pix2pix initialise every convolution with N(0, 0.02).
normal_init = nnx.initializers.normal(stddev=0.02)
# He et al.'s initialisation (ResNet); also used for the hourglass (Newell used Torch's).
he_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def Conv(*args, **kwargs) -> nnx.Conv:
  """nnx.Conv whose products run in the computation dtype and accumulate into a float32 output.

  A bfloat16 output would round each activation relative to its magnitude before the batch or
  instance norm that follows subtracts the mean (catastrophic cancellation where the mean is
  large against the spread); norms here compute in float32 and emit the computation dtype.
  """
  kwargs.setdefault("preferred_element_type", jnp.float32)
  return nnx.Conv(*args, **kwargs)


def ConvTranspose(*args, **kwargs) -> nnx.ConvTranspose:
  """nnx.ConvTranspose with a float32 output, as `Conv`."""
  kwargs.setdefault("preferred_element_type", jnp.float32)
  return nnx.ConvTranspose(*args, **kwargs)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of the spatial axes of an NHWC tensor (PyTorch's ReflectionPad2d)."""
  if pad == 0:
    return x
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def to_signed(images: jax.Array, dtype) -> jax.Array:
  """[0, 1] images -> [-1, 1] in the computation dtype."""
  return images.astype(dtype) * 2.0 - 1.0


def to_unit_interval(x: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1], float32, clipped to the image range."""
  return jnp.clip((x.astype(jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


def activation(name: str | None):
  """'relu', 'lrelu' (slope 0.2, as pix2pix/DeblurGAN discriminators), 'tanh' or None."""
  if name is None:
    return lambda x: x
  return {"relu": jax.nn.relu, "lrelu": lambda x: jax.nn.leaky_relu(x, 0.2),
          "tanh": jnp.tanh}[name]


def max_pool(x: jax.Array, factor: int = 2) -> jax.Array:
  return nnx.max_pool(x, (factor, factor), strides=(factor, factor))


def avg_pool(x: jax.Array, factor: int) -> jax.Array:
  if factor == 1:
    return x
  return nnx.avg_pool(x, (factor, factor), strides=(factor, factor))


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  if x.shape[1:3] == (height, width):
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear")


def zero_(variable: nnx.Variable) -> None:
  """Sets a variable to zeros in place (zero-initialised residual branches)."""
  variable[...] = jnp.zeros_like(variable[...])


def count_params(module: nnx.Module) -> int:
  """Number of trainable parameters; a module shared by two parents is counted once."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


class BatchNorm(nnx.BatchNorm):
  """Batch norm with PyTorch's/TF-slim's usual constants (momentum 0.9, eps 1e-5), computed in
  float32 whatever the computation dtype (its output is cast back to it).

  Normalising in bfloat16 rounds x before x - mean: where activations carry a large common
  offset (residual streams) that cancellation would cost most of the signal's precision.
  Running statistics are `nnx.BatchStat` (not Param): the train loop carries them as state;
  `model.train()` uses batch statistics, `model.eval()` the running averages.
  """

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    super().__init__(num_features, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)
    self.out_dtype = dtype

  def __call__(self, x, use_running_average=None, *, mask=None):
    y = super().__call__(x, use_running_average, mask=mask)
    return y.astype(self.out_dtype or x.dtype)


def make_norm(kind: str | None, num_features: int, *, dtype=None, rngs: nnx.Rngs):
  """'instance' (no affine, as DeblurGAN), 'batch' (affine, running stats) or None."""
  if kind is None:
    return None
  if kind == "instance":
    return InstanceNorm(num_features, dtype=dtype, rngs=rngs)
  if kind == "batch":
    return BatchNorm(num_features, dtype=dtype, rngs=rngs)
  raise ValueError(f"unknown normalisation {kind!r} (instance, batch or None)")


def norm_act(y, norm, act: str | None, order: str = "norm_act"):
  """norm then activation ("norm_act"), or activation then norm ("act_norm"); norm may be None."""
  if order not in ("norm_act", "act_norm"):
    raise ValueError(f"order must be 'norm_act' or 'act_norm', not {order!r}")
  if order == "act_norm":
    y = activation(act)(y)
  if norm is not None:
    y = norm(y)
  return activation(act)(y) if order == "norm_act" else y


class InstanceNorm(nnx.Module):
  """Instance normalisation without affine parameters, as DeblurGAN uses it."""

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    # computed in float32 (see `BatchNorm`), emitted in the computation dtype
    self.norm = nnx.InstanceNorm(
        num_features, epsilon=1e-5, use_scale=False, use_bias=False, dtype=jnp.float32,
        rngs=rngs)
    self.out_dtype = dtype

  def __call__(self, x):
    return self.norm(x).astype(self.out_dtype or x.dtype)


class ConvNormAct(nnx.Module):
  """[reflect pad] -> conv -> norm -> activation (order="act_norm": conv -> act -> norm).

  padding: "SAME" (TensorFlow's, also for even kernels), an int (symmetric zero padding, as
  PyTorch's `padding=`), or None: reflect padding of `reflect` pixels if set, else (k-1)//2.
  Defaults are DeblurGAN's: instance norm, ReLU, conv bias.
  """

  def __init__(self, cin, cout, kernel_size, *, stride=1, reflect=0, padding=None,
               norm="instance", act="relu", order="norm_act", use_bias=True,
               kernel_init=normal_init, dtype=None, rngs):
    self.reflect = reflect
    self.act = act
    self.order = order
    if reflect:
      pad = "VALID"
    elif padding is None:
      pad = (((kernel_size - 1) // 2,) * 2,) * 2
    elif isinstance(padding, int):
      pad = ((padding, padding),) * 2
    else:
      pad = padding
    self.conv = Conv(cin, cout, (kernel_size, kernel_size), strides=stride, padding=pad,
                     use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
    self.norm = make_norm(norm, cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return norm_act(self.conv(reflect_pad(x, self.reflect)), self.norm, self.act, self.order)


class UpConvNormAct(nnx.Module):
  """Transposed conv -> norm -> activation.

  Default: DeblurGAN's 3x3 stride-2 transposed conv (PyTorch padding=1, output_padding=1,
  i.e. exactly doubles H, W) -> instance norm -> ReLU. padding="SAME" gives TensorFlow's
  `conv2d_transpose` geometry (output = input * stride) for any kernel size.
  """

  def __init__(self, cin, cout, *, kernel_size=3, stride=2, padding=None, norm="instance",
               act="relu", order="norm_act", use_bias=True, kernel_init=normal_init,
               dtype=None, rngs):
    if padding is None:  # ConvTranspose2d(k=3, s=2, p=1, output_padding=1)
      padding = ((1, 2), (1, 2))
    self.act = act
    self.order = order
    self.conv = ConvTranspose(cin, cout, (kernel_size, kernel_size), strides=(stride, stride),
                              padding=padding, use_bias=use_bias, kernel_init=kernel_init,
                              dtype=dtype, rngs=rngs)
    self.norm = make_norm(norm, cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return norm_act(self.conv(x), self.norm, self.act, self.order)


class ResnetBlock(nnx.Module):
  """DeblurGAN's residual block: pad-conv3-norm-ReLU-[dropout]-pad-conv3-norm, plus identity."""

  def __init__(self, dim, *, dropout=0.0, dtype=None, rngs):
    self.conv1 = Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                      dtype=dtype, rngs=rngs)
    self.norm1 = InstanceNorm(dim, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)  # its key comes with each call (no RNG in the state)
    self.conv2 = Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                      dtype=dtype, rngs=rngs)
    self.norm2 = InstanceNorm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, x, rngs=None):
    y = jax.nn.relu(self.norm1(self.conv1(reflect_pad(x, 1))))
    y = self.dropout(y, rngs=rngs)
    y = self.norm2(self.conv2(reflect_pad(y, 1)))
    return x + y
