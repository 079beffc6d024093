"""Discriminators: DeblurGAN's PatchGAN (Fan & Luo) and the 2019 5-layer discriminator.

Both are the n-layer PatchGAN of pix2pix (Isola et al. 2017) in two settings:
- `PatchGANDiscriminator` (DeblurGAN's `NLayerDiscriminator`, n_layers=3, ndf=64): 4x4 convs,
  strides 2, 2, 2, 1, 1, padding 2, LeakyReLU(0.2), instance norm without affine on layers 2-4,
  a bias on every conv; no sigmoid (raw scores for WGAN-GP and LSGAN), `sigmoid=True` for the
  vanilla GAN. 2,764,737 parameters on 3-channel input.
- `Chrysos2019Discriminator`: "The discriminator consists of 5 layers" (2019, Sec. 5.1), i.e.
  the pix2pix cGAN discriminator (its 70x70 PatchGAN has exactly 5 conv layers): padding 1,
  batch norm on layers 2-4 (the paper's generators use batch norm; convs before a BN have no
  bias), conditional: it sees the image concatenated with the blurry input (6 channels). Returns
  the logits and the penultimate layer's features (layer 4, after norm and LeakyReLU), the
  projection pi of the projection loss ||pi(G_bl(I_bl)) - pi(I_s)||_1.
Inputs are [0, 1] images (mapped to [-1, 1] as the generators see them); outputs are float32.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fdeblur.models import layers


class NLayerDiscriminator(nnx.Module):
  """PatchGAN: conv(ndf)/2-lrelu, (n_layers-1) x [conv/2-norm-lrelu], conv/1-norm-lrelu, conv->1."""

  def __init__(self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
               norm: str | None = "instance", padding: int = 2, bias_before_norm: bool = True,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    widths = [ndf * min(2 ** n, 8) for n in range(n_layers + 1)]
    strides = [2] * n_layers + [1]
    blocks, cin = [], in_channels
    for i, (cout, s) in enumerate(zip(widths, strides)):
      block_norm = None if i == 0 else norm
      blocks.append(layers.ConvNormAct(
          cin, cout, 4, stride=s, padding=padding, norm=block_norm, act="lrelu",
          use_bias=bias_before_norm or block_norm is None, kernel_init=layers.normal_init,
          dtype=dtype, rngs=rngs))
      cin = cout
    self.blocks = nnx.List(blocks)
    self.out = layers.Conv(cin, 1, (4, 4), padding=((padding, padding), (padding, padding)),
                           kernel_init=layers.normal_init, dtype=dtype, rngs=rngs)

  def logits_and_features(self, images: jax.Array, condition: jax.Array | None = None):
    """images (and condition, concatenated on channels): [B, H, W, C] in [0, 1].

    Returns (logits [B, h, w, 1], penultimate features [B, h', w', 8 ndf]), float32.
    """
    x = layers.to_signed(images, self.dtype)
    if condition is not None:
      x = jnp.concatenate([layers.to_signed(condition, self.dtype), x], axis=-1)
    for block in self.blocks:
      x = block(x)
    return self.out(x).astype(jnp.float32), x.astype(jnp.float32)


class PatchGANDiscriminator(NLayerDiscriminator):
  """DeblurGAN's discriminator for Fan & Luo. `__call__` returns the patch scores."""

  def __init__(self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3,
               sigmoid: bool = False, dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(in_channels=in_channels, ndf=ndf, n_layers=n_layers, norm="instance",
                     padding=2, bias_before_norm=True, dtype=dtype, rngs=rngs)
    self.sigmoid = sigmoid

  def __call__(self, images: jax.Array, condition: jax.Array | None = None) -> jax.Array:
    logits, _ = self.logits_and_features(images, condition)
    return jax.nn.sigmoid(logits) if self.sigmoid else logits


class Chrysos2019Discriminator(NLayerDiscriminator):
  """The 2019 conditional 5-layer discriminator. `__call__` returns (logits, features)."""

  def __init__(self, *, in_channels: int = 6, ndf: int = 64, dtype=jnp.float32,
               rngs: nnx.Rngs):
    super().__init__(in_channels=in_channels, ndf=ndf, n_layers=3, norm="batch", padding=1,
                     bias_before_norm=False, dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array, condition: jax.Array | None = None):
    """images: real or deblurred; condition: the blurry input (cGAN). (logits, penultimate)."""
    return self.logits_and_features(images, condition)
