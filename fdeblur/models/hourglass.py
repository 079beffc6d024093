"""Stacked hourglass network (Newell, Yang & Deng, ECCV 2016): stage 1 of Chrysos et al. 2019.

"An off-the-shelf implementation of the HG network as described in Newell et al (2016) is used"
(2019, Sec. 5.1); it is trained alone on kernel-blurred faces, then frozen.

Newell's network, as in the authors' Torch code (hg.lua):
- residual module: pre-activation bottleneck BN-ReLU-1x1(c/2)-BN-ReLU-3x3(c/2)-BN-ReLU-1x1(c),
  shortcut identity, or a 1x1 conv when the channel count changes; convolutions with bias;
- stem: 7x7/2 conv (64) + BN + ReLU, residual(64->128), 2x2 max-pool, residual(128->128),
  residual(128->F): features at 1/4 resolution;
- hourglass(n): upper branch residual(s) at this resolution; lower branch max-pool, residual(s),
  hourglass(n-1) (a residual at n = 1), residual(s), nearest 2x upsampling; sum. Depth 4, i.e.
  four down-samplings (1/4 -> 1/64 of the input);
- after each hourglass: residual(s), "lin" (1x1 conv + BN + ReLU), a 1x1 conv to the prediction
  (here a 3-channel image at 1/4 resolution instead of heat-maps); between stacks the features
  and the prediction are mapped back by 1x1 convs and added to the stack's input.

To give an image of the input's size (Newell predicts at 1/4 resolution), the last stack's
features pass through two stride-2 transposed convs (F -> F/2 -> F/4, BN, ReLU) and a 7x7 conv
with tanh, added to the input (residual learning, as DeblurGAN). The per-stack quarter-resolution
predictions (residuals on the 4x4-average-pooled input) are returned with
`intermediate_outputs=True`, for Newell's intermediate supervision.
Input height and width must be multiples of 64.

Initialisation (Newell used Torch's defaults): He-normal convs, and by default the last conv of
every residual module at zero, so that each module starts as its shortcut ("zero-init residual",
Goyal et al. 2017). At random init this deep BN network is chaotic (a 2^-9 relative parameter
perturbation moves the output by 1.5-3%, and bfloat16 compute differs from float32 by as much);
zero-initialised residual branches bring both under 0.5%.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fdeblur.models import layers


def _conv(cin, cout, k, dtype, rngs, stride=1):
  return layers.Conv(cin, cout, (k, k), strides=stride, padding=(k - 1) // 2,
                     kernel_init=layers.he_init, dtype=dtype, rngs=rngs)


class Residual(nnx.Module):
  """Newell's residual module (pre-activation bottleneck)."""

  def __init__(self, cin, cout, *, dtype, rngs):
    mid = cout // 2
    self.bn1 = layers.BatchNorm(cin, dtype=dtype, rngs=rngs)
    self.conv1 = _conv(cin, mid, 1, dtype, rngs)
    self.bn2 = layers.BatchNorm(mid, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(mid, mid, 3, dtype, rngs)
    self.bn3 = layers.BatchNorm(mid, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(mid, cout, 1, dtype, rngs)
    self.skip = _conv(cin, cout, 1, dtype, rngs) if cin != cout else None

  def __call__(self, x):
    y = self.conv1(jax.nn.relu(self.bn1(x)))
    y = self.conv2(jax.nn.relu(self.bn2(y)))
    y = self.conv3(jax.nn.relu(self.bn3(y)))
    s = self.skip(x) if self.skip is not None else x
    # The residual stream stays float32 (convolutions run in the computation dtype): its
    # common offset grows through the hourglass's additions, and bfloat16 steps there would
    # swamp the features once a batch norm removes the offset.
    return s.astype(jnp.float32) + y.astype(jnp.float32)


def _residuals(n, f, dtype, rngs):
  return nnx.List([Residual(f, f, dtype=dtype, rngs=rngs) for _ in range(n)])


def _run(mods, x):
  for m in mods:
    x = m(x)
  return x


class Hourglass(nnx.Module):
  """One recursive hourglass of `depth` down-samplings on `features` channels."""

  def __init__(self, depth, features, *, n_modules=1, dtype, rngs):
    self.up1 = _residuals(n_modules, features, dtype, rngs)
    self.low1 = _residuals(n_modules, features, dtype, rngs)
    self.low2 = (Hourglass(depth - 1, features, n_modules=n_modules, dtype=dtype, rngs=rngs)
                 if depth > 1 else _residuals(n_modules, features, dtype, rngs))
    self.low3 = _residuals(n_modules, features, dtype, rngs)

  def __call__(self, x):
    up1 = _run(self.up1, x)
    low = _run(self.low1, layers.max_pool(x, 2))
    low = self.low2(low) if isinstance(self.low2, Hourglass) else _run(self.low2, low)
    low = _run(self.low3, low)
    return up1 + layers.upsample_nearest(low, 2)


class StackedHourglass(nnx.Module):
  """Newell's stacked hourglass with a full-resolution image head (see the module docstring).

  n_stacks: 8 in Newell's final model; features: 256; n_modules: residual modules per site (1);
  depth: down-samplings per hourglass (4); zero_init_residual: the last conv of every residual
  module starts at 0, so each module starts as its shortcut (see the module docstring).
  """

  def __init__(self, *, n_stacks: int = 8, features: int = 256, n_modules: int = 1,
               depth: int = 4, zero_init_residual: bool = True, in_channels: int = 3,
               out_channels: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
    f = features
    self.dtype = dtype
    self.depth = depth
    stem_width = max(f // 4, 1)  # 64 and 128 at Newell's F = 256
    self.stem = layers.ConvNormAct(in_channels, stem_width, 7, stride=2, padding=3, norm="batch",
                                   kernel_init=layers.he_init, dtype=dtype, rngs=rngs)
    self.r1 = Residual(stem_width, f // 2, dtype=dtype, rngs=rngs)
    self.r4 = Residual(f // 2, f // 2, dtype=dtype, rngs=rngs)
    self.r5 = Residual(f // 2, f, dtype=dtype, rngs=rngs)
    self.hourglasses = nnx.List([Hourglass(depth, f, n_modules=n_modules, dtype=dtype, rngs=rngs)
                                 for _ in range(n_stacks)])
    self.post = nnx.List([_residuals(n_modules, f, dtype, rngs) for _ in range(n_stacks)])
    self.lin = nnx.List([
        layers.ConvNormAct(f, f, 1, norm="batch", kernel_init=layers.he_init, dtype=dtype,
                           rngs=rngs) for _ in range(n_stacks)])
    self.predict = nnx.List([_conv(f, out_channels, 1, dtype, rngs) for _ in range(n_stacks)])
    self.features_back = nnx.List([_conv(f, f, 1, dtype, rngs) for _ in range(n_stacks - 1)])
    self.prediction_back = nnx.List([_conv(out_channels, f, 1, dtype, rngs)
                                     for _ in range(n_stacks - 1)])
    self.up = nnx.List([
        layers.UpConvNormAct(f, f // 2, norm="batch", kernel_init=layers.he_init, dtype=dtype,
                             rngs=rngs),
        layers.UpConvNormAct(f // 2, f // 4, norm="batch", kernel_init=layers.he_init,
                             dtype=dtype, rngs=rngs)])
    self.head = layers.Conv(f // 4, out_channels, (7, 7), padding="VALID",
                            kernel_init=layers.normal_init, dtype=dtype, rngs=rngs)
    if zero_init_residual:
      for _, module in nnx.iter_modules(self):
        if isinstance(module, Residual):
          layers.zero_(module.conv3.kernel)

  def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None,
               intermediate_outputs: bool = False):
    """images: [B, H, W, 3] in [0, 1], H and W multiples of 4 * 2**depth (64).

    Returns float32 [B, H, W, 3] in [0, 1]; with intermediate_outputs=True also the list of
    per-stack predictions at 1/4 resolution (float32, [0, 1]). No dropout.
    """
    del rngs
    h, w = images.shape[1:3]
    m = 4 * 2 ** self.depth
    if h % m or w % m:
      raise ValueError(f"hourglass input height and width must be multiples of {m}: {h}x{w}")
    x = layers.to_signed(images, self.dtype)
    y = self.r1(self.stem(x))
    inter = self.r5(self.r4(layers.max_pool(y, 2)))
    x_quarter = layers.avg_pool(x, 4)
    predictions = []
    n = len(self.hourglasses)
    for i in range(n):
      ll = _run(self.post[i], self.hourglasses[i](inter))
      ll = self.lin[i](ll)
      pred = self.predict[i](ll)
      predictions.append(layers.to_unit_interval(x_quarter + pred))
      if i < n - 1:
        inter = inter + self.features_back[i](ll) + self.prediction_back[i](pred)
    y = ll
    for up in self.up:
      y = up(y)
    out = layers.to_unit_interval(x + jnp.tanh(self.head(layers.reflect_pad(y, 3))))
    return (out, predictions) if intermediate_outputs else out
