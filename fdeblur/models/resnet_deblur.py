"""The 2017 face deblurring network (Chrysos & Zafeiriou, "Deep Face Deblurring", Sec. 3.3).

"A modified version of the residual network (ResNet) architecture of [He et al. 2016] ... We
modify the original ResNet by disabling all the max pooling operations, while skip connections
([Hariharan et al., hypercolumns]) are added in the [..] and [..] ResNet blocks. A batch
normalisation is added in every skip connection to ensure a common scale; a linear mapping is
learnt from the high-dimensional space of the connections to the low dimensional space of the
output image shape."

What is built (the two block ordinals did not survive in the paper's text; see `skip_blocks`):
- ResNet v1 of He et al. (Table 1): 7x7/2 conv (64) + BN + ReLU, *no* 3x3/2 max-pool, then four
  stages ("blocks" conv2_x..conv5_x) of basic (depth 18/34) or bottleneck (50/101/152) units,
  the first unit of stages 2-4 with stride 2 (in its first conv, as the original model whose
  weights the paper fine-tuned) and a projection shortcut (1x1 conv + BN) where the shape
  changes. Convolutions have no bias (each is followed by BN).
- Hypercolumn output: the outputs of stages `skip_blocks` and of the last stage each pass
  through their own batch norm, are brought to the input resolution (bilinear, as hypercolumns)
  and concatenated; a learnt linear map (1x1 conv with bias) gives the 3-channel image.
  Implemented as the equal sum over connections of upsample(W_i · BN_i(f_i)) + b, which has the
  same parameters as one 1x1 conv over the concatenation (upsampling and a per-pixel linear map
  commute; bilinear weights sum to 1, so the bias is unchanged) without materialising a
  (256·w + 512·w + 2048·w)-channel tensor at full resolution.
- Working range [-1, 1]; the linear output is clipped to the image range.
- Initialisation (the paper fine-tuned ImageNet weights; from scratch here): He-normal convs and,
  by default, the last batch norm of each residual unit with scale 0 (Goyal et al. 2017), so
  every unit starts as its shortcut. A randomly initialised 50-layer BN ResNet is chaotic: a
  2^-9 relative perturbation of its parameters moves this network's output by ~15% (float32,
  batch statistics), which also puts bfloat16 compute ~10-20% off float32; with zero-initialised
  residuals both are ~0.3%.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fdeblur.models import layers

# He et al. 2016, Table 1: depth -> (unit type, units per stage).
RESNET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv_bn(cin, cout, k, stride, act, dtype, rngs):
  return layers.ConvNormAct(cin, cout, k, stride=stride, padding=(k - 1) // 2, norm="batch",
                            act=act, use_bias=False, kernel_init=layers.he_init, dtype=dtype,
                            rngs=rngs)


class BasicUnit(nnx.Module):
  """ResNet v1 basic unit: 3x3-BN-ReLU-3x3-BN, + shortcut, ReLU."""
  expansion = 1

  def __init__(self, cin, width, stride, *, zero_init=True, dtype, rngs):
    cout = width
    self.conv1 = _conv_bn(cin, width, 3, stride, "relu", dtype, rngs)
    self.conv2 = _conv_bn(width, cout, 3, 1, None, dtype, rngs)
    self.shortcut = (_conv_bn(cin, cout, 1, stride, None, dtype, rngs)
                     if stride != 1 or cin != cout else None)
    if zero_init:
      layers.zero_(self.conv2.norm.scale)

  def __call__(self, x):
    y = self.conv2(self.conv1(x))
    s = self.shortcut(x) if self.shortcut is not None else x
    return jax.nn.relu(y + s)


class BottleneckUnit(nnx.Module):
  """ResNet v1 bottleneck: 1x1(/stride)-BN-ReLU-3x3-BN-ReLU-1x1(4w)-BN, + shortcut, ReLU."""
  expansion = 4

  def __init__(self, cin, width, stride, *, zero_init=True, dtype, rngs):
    cout = width * 4
    self.conv1 = _conv_bn(cin, width, 1, stride, "relu", dtype, rngs)
    self.conv2 = _conv_bn(width, width, 3, 1, "relu", dtype, rngs)
    self.conv3 = _conv_bn(width, cout, 1, 1, None, dtype, rngs)
    self.shortcut = (_conv_bn(cin, cout, 1, stride, None, dtype, rngs)
                     if stride != 1 or cin != cout else None)
    if zero_init:
      layers.zero_(self.conv3.norm.scale)

  def __call__(self, x):
    y = self.conv3(self.conv2(self.conv1(x)))
    s = self.shortcut(x) if self.shortcut is not None else x
    return jax.nn.relu(y + s)


class ResNetDeblur(nnx.Module):
  """ResNet without max-pooling, batch-normalised skips and a linear map to the image.

  depth: 18, 34, 50, 101 or 152 (He et al.'s Table 1); width: channels of the first conv and
  stage 1 (64 in ResNet; reduce for tiny CPU configs); skip_blocks: the stages (1-4) whose
  outputs feed the linear map besides the last stage's; zero_init_residual: the last batch
  norm of every unit starts with scale 0 (each unit starts as its shortcut; Goyal et al. 2017).
  """

  def __init__(self, *, depth: int = 50, width: int = 64, skip_blocks=(1, 2),
               zero_init_residual: bool = True, in_channels: int = 3, out_channels: int = 3,
               dtype=jnp.float32, rngs: nnx.Rngs):
    if depth not in RESNET_STAGES:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGES)}, not {depth}")
    kind, units = RESNET_STAGES[depth]
    unit_cls = BasicUnit if kind == "basic" else BottleneckUnit
    skip_blocks = tuple(sorted(set(int(b) for b in skip_blocks)))
    if any(not 1 <= b <= len(units) for b in skip_blocks):
      raise ValueError(f"skip_blocks must be stage numbers in 1..{len(units)}: {skip_blocks}")
    self.dtype = dtype
    self.taps = tuple(b for b in skip_blocks if b != len(units)) + (len(units),)
    self.stem = _conv_bn(in_channels, width, 7, 2, "relu", dtype, rngs)
    stages, cin, tap_channels = [], width, {}
    for s, n in enumerate(units):
      w = width * 2 ** s
      stage = []
      for u in range(n):
        stride = 2 if (s > 0 and u == 0) else 1
        stage.append(unit_cls(cin, w, stride, zero_init=zero_init_residual, dtype=dtype,
                              rngs=rngs))
        cin = w * unit_cls.expansion
      stages.append(nnx.List(stage))
      tap_channels[s + 1] = cin
    self.stages = nnx.List(stages)
    self.skip_norms = nnx.List([layers.BatchNorm(tap_channels[b], dtype=dtype, rngs=rngs)
                                for b in self.taps])
    # The linear map: one 1x1 conv's weights split by connection; the bias lives on the first.
    self.linear = nnx.List([
        layers.Conv(tap_channels[b], out_channels, (1, 1), use_bias=(i == 0),
                    kernel_init=layers.normal_init, dtype=dtype, rngs=rngs)
        for i, b in enumerate(self.taps)])

  def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images: [B, H, W, C] in [0, 1]. Returns float32 [B, H, W, 3] in [0, 1]. No dropout."""
    del rngs
    h, w = images.shape[1:3]
    x = layers.to_signed(images, self.dtype)
    y = self.stem(x)
    taps = {}
    for s, stage in enumerate(self.stages):
      for unit in stage:
        y = unit(y)
      taps[s + 1] = y
    out = 0.0
    for b, norm, linear in zip(self.taps, self.skip_norms, self.linear):
      out = out + layers.resize_bilinear(linear(norm(taps[b])), h, w)
    return layers.to_unit_interval(out)
