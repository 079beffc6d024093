"""DeblurGAN-style generator: the face deblurring processor of Fan & Luo (Sec. 4.1, Fig. 1).

Fan & Luo: "three convolution blocks, ... 6 ResNet blocks, ... 2 transposed convolution blocks and
the final output convolution block" - DeblurGAN's ResnetGenerator (Kupyn et al. 2018):
reflect-padded 7x7 conv, two stride-2 3x3 conv blocks, `n_blocks` residual blocks
(pad-conv3-IN-ReLU-dropout(0.5)-pad-conv3-IN, + identity), two 3x3 stride-2 transposed convs
(PyTorch padding 1, output_padding 1), reflect-padded 7x7 output conv with tanh and the global
skip from the input (`learn_residual`), clamped to the image range. Instance norm without affine,
every conv with a bias, N(0, 0.02) init. With ngf=64 and 6 blocks: 7,837,699 parameters, as
DeblurGAN. (DeblurGAN's later `ResnetBlock` builds its layer list as `a + [Dropout] if use_dropout
else [] + b`, which by operator precedence keeps one conv per block either way; the blocks here
are the two-conv blocks of its earlier code, of pix2pix/CycleGAN, and of the 7.84 M figure.)
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fdeblur.models import layers


class DeblurGANGenerator(nnx.Module):

  def __init__(self, *, ngf: int = 64, n_blocks: int = 6, dropout: float = 0.5,
               in_channels: int = 3, zero_head: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    """zero_head: start the output conv at zero, so the untrained network is the identity (the
    global skip) instead of the input plus a random residual; not in DeblurGAN, whose N(0, 0.02)
    head adds ~0.2 of noise that training must first unlearn."""
    self.dtype = dtype
    self.stem = layers.ConvNormAct(in_channels, ngf, 7, reflect=3, dtype=dtype, rngs=rngs)
    self.down = nnx.List([
        layers.ConvNormAct(ngf * m, ngf * m * 2, 3, stride=2, dtype=dtype, rngs=rngs)
        for m in (1, 2)])
    self.blocks = nnx.List([
        layers.ResnetBlock(ngf * 4, dropout=dropout, dtype=dtype, rngs=rngs)
        for _ in range(n_blocks)])
    self.up = nnx.List([
        layers.UpConvNormAct(ngf * m, ngf * m // 2, dtype=dtype, rngs=rngs) for m in (4, 2)])
    self.head = layers.Conv(ngf, in_channels, (7, 7), padding="VALID",
                            kernel_init=nnx.initializers.zeros if zero_head else layers.normal_init,
                            dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images: [B, H, W, 3] in [0, 1], H and W multiples of 4. Returns float32 in [0, 1].

    rngs: a `dropout` stream, needed in train mode when dropout > 0.
    """
    x = images.astype(self.dtype) * 2.0 - 1.0  # DeblurGAN works in [-1, 1]
    y = self.stem(x)
    for block in self.down:
      y = block(y)
    for block in self.blocks:
      y = block(y, rngs=rngs)
    for block in self.up:
      y = block(y)
    y = jnp.tanh(self.head(layers.reflect_pad(y, 3)))
    out = jnp.clip(x + y, -1.0, 1.0)
    return ((out.astype(jnp.float32) + 1.0) * 0.5)
