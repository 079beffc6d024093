"""Stage 2 of Chrysos, Favaro & Zafeiriou 2019 ("Motion deblurring of faces", Sec. 3.2, 5.1).

Two encoder-decoder generators: G_bl takes the blurry image concatenated with the stage-1
hourglass output (6 channels), G_s the sharp image (3 channels, identity-preservation stream,
used only in training). Each has its own 8-layer encoder; the decoder is ONE module shared by
both ("The decoders of the two copies have shared weights"): the same object is a child of both
generators, so NNX holds its variables once.

Table 3 (encoder | decoder; "dropout denotes the probability that this layer is kept"):
  Conv.1 4x4x64  s1 no BN    | F-Conv.1 1x1x1024 s2 BN keep 0.5
  Conv.2 4x4x128 s2 BN       | F-Conv.2 4x4x512  s2 BN keep 0.5
  Conv.3 4x4x256 s2 BN       | F-Conv.3 4x4x512  s2 BN keep 0.5
  Conv.4-7 4x4x512 s2 BN     | F-Conv.4 4x4x512  s2 BN
  Conv.8 1x1x256 s2 BN       | F-Conv.5 4x4x256, F-Conv.6 4x4x128, F-Conv.7 4x4x64 s2 BN
                             | F-Conv.8 4x4x3    s1 no BN
At 256x256 the encoder goes 256 -> 2 (2x2x256 code) and the decoder back to 256. Widths are
multiples of `ngf` (64 in the paper; smaller for tiny CPU configs), spatial padding is
TensorFlow's "SAME" (the authors' framework).

Choices where the paper is silent (each configurable or documented):
- order: "each convolutional layer is followed by a RELU and batch normalization". Default
  conv -> BN -> ReLU (`order="norm_act"`: pix2pix's order, and TF-slim's `conv2d` with a
  normalizer), with no conv bias before a BN (it would be cancelled); `order="act_norm"` is the
  sentence's literal conv -> ReLU -> BN, with biases. The literal order is far more sensitive at
  random init: a 2^-9 relative parameter perturbation moves the output by 8% at 128² (1.3% at
  256²; ngf 8, float32, batch statistics), against 0.5% (0.2%) for conv -> BN -> ReLU, and
  bfloat16 compute is off by as much. Dropout comes after the activation;
- residual connections "after the first, the third and the fifth layer of the encoder and skip
  two layers each" (decoder: after the first and the third): the output of layer k is added to
  the output of layer k+2. The two layers halve (encoder) or double (decoder) the resolution
  twice, so the shortcut is a projection in He et al.'s sense: 4x4 average pooling (encoder) or
  4x nearest upsampling (decoder), with a 1x1 conv where the channel count changes;
- "Two U-net style skip connections from the encoder to the decoder": concatenation (as U-net)
  of encoder layer i's output to the decoder layer output of the same resolution (8 - i), as the
  input of decoder layer 9 - i; `unet_skips=(1, 2)` (the two highest resolutions) by default;
- output: tanh, mapped from [-1, 1] to [0, 1].
"""
import jax
import jax.numpy as jnp
from flax import nnx

from fdeblur.models import layers
from fdeblur.models.hourglass import StackedHourglass

# Table 3 as data. Encoder: (kernel, width as a multiple of ngf, stride, batch norm).
ENCODER_TABLE = ((4, 1, 1, False), (4, 2, 2, True), (4, 4, 2, True), (4, 8, 2, True),
                 (4, 8, 2, True), (4, 8, 2, True), (4, 8, 2, True), (1, 4, 2, True))
# Decoder: (kernel, width multiple or None for the image channels, stride, batch norm, keep prob).
DECODER_TABLE = ((1, 16, 2, True, 0.5), (4, 8, 2, True, 0.5), (4, 8, 2, True, 0.5),
                 (4, 8, 2, True, 1.0), (4, 4, 2, True, 1.0), (4, 2, 2, True, 1.0),
                 (4, 1, 2, True, 1.0), (4, None, 1, False, 1.0))
ENCODER_RESIDUALS = (1, 3, 5)  # "after the first, the third and the fifth layer"
DECODER_RESIDUALS = (1, 3)  # "after the first and the third layers of the decoder"


def _bias(batch_norm: bool, order: str) -> bool:
  """A conv bias unless a batch norm directly follows (order "norm_act"), which cancels it."""
  return not batch_norm or order == "act_norm"


def encoder_widths(ngf):
  return [m * ngf for _, m, _, _ in ENCODER_TABLE]


def decoder_widths(ngf, out_channels=3):
  return [out_channels if m is None else m * ngf for _, m, _, _, _ in DECODER_TABLE]


class Shortcut(nnx.Module):
  """Projection shortcut over two layers: resample by `factor` (average pooling when `down`,
  nearest upsampling otherwise), plus a 1x1 conv when the channel count changes."""

  def __init__(self, cin, cout, factor, *, down, dtype, rngs):
    self.factor, self.down = factor, down
    self.proj = (layers.Conv(cin, cout, (1, 1), kernel_init=layers.normal_init, dtype=dtype,
                             rngs=rngs) if cin != cout else None)

  def __call__(self, x):
    # The 1x1 conv commutes with both resamplings: run it at the lower resolution.
    if self.down:
      x = layers.avg_pool(x, self.factor)
    x = self.proj(x) if self.proj is not None else x
    return x if self.down else layers.upsample_nearest(x, self.factor)


def _resampling(table, residuals):
  """Total stride of layers k+1 and k+2 for each residual connection after layer k."""
  return {k: table[k][2] * table[k + 1][2] for k in residuals}


class Encoder(nnx.Module):
  """The 8-layer encoder of Table 3 with residual connections after layers 1, 3, 5."""

  def __init__(self, in_channels, *, ngf=64, order="norm_act", dtype=jnp.float32, rngs):
    widths = encoder_widths(ngf)
    cins = [in_channels] + widths[:-1]
    self.layers = nnx.List([
        layers.ConvNormAct(cin, cout, k, stride=s, padding="SAME", norm="batch" if bn else None,
                           act="relu", order=order, use_bias=_bias(bn, order), dtype=dtype,
                           rngs=rngs)
        for cin, cout, (k, _, s, bn) in zip(cins, widths, ENCODER_TABLE)])
    strides = _resampling(ENCODER_TABLE, ENCODER_RESIDUALS)
    self.shortcuts = nnx.Dict({
        str(k): Shortcut(widths[k - 1], widths[k + 1], strides[k], down=True, dtype=dtype,
                         rngs=rngs) for k in ENCODER_RESIDUALS})

  def __call__(self, x):
    """Returns the 8 layer outputs (index 0 = layer 1)."""
    outs = []
    for i, layer in enumerate(self.layers):
      y = layer(x)
      k = i + 1 - 2  # a connection after layer k ends at layer k + 2
      if str(k) in self.shortcuts:
        y = y + self.shortcuts[str(k)](outs[k - 1])
      outs.append(y)
      x = y
    return outs


class Decoder(nnx.Module):
  """The 8-layer decoder of Table 3: residual connections after layers 1, 3, U-net skips."""

  def __init__(self, *, ngf=64, out_channels=3, dropout=0.5, unet_skips=(1, 2),
               order="norm_act", dtype=jnp.float32, rngs):
    enc = encoder_widths(ngf)
    widths = decoder_widths(ngf, out_channels)
    self.unet_skips = tuple(sorted(int(i) for i in unet_skips))
    for i in self.unet_skips:
      if not 1 <= i <= 7:
        raise ValueError(f"U-net skips come from encoder layers 1..7, not {i}")
    cins = [enc[-1]] + widths[:-1]
    for i in self.unet_skips:  # encoder layer i joins the input of decoder layer 9 - i
      cins[8 - i] += enc[i - 1]
    self.layers = nnx.List()
    self.dropouts = nnx.List()
    for j, (cin, cout, (k, _, s, bn, keep)) in enumerate(zip(cins, widths, DECODER_TABLE)):
      last = j == len(DECODER_TABLE) - 1
      self.layers.append(layers.UpConvNormAct(
          cin, cout, kernel_size=k, stride=s, padding="SAME", norm="batch" if bn else None,
          act="tanh" if last else "relu", order=order, use_bias=_bias(bn, order), dtype=dtype,
          rngs=rngs))
      # "dropout denotes the probability that this layer is kept": rate = 1 - keep, scaled
      # by the keep probability in training (its key comes with each call).
      self.dropouts.append(nnx.Dropout(dropout if keep < 1.0 else 0.0))
    strides = _resampling(DECODER_TABLE, DECODER_RESIDUALS)
    self.shortcuts = nnx.Dict({
        str(k): Shortcut(widths[k - 1], widths[k + 1], strides[k], down=False, dtype=dtype,
                         rngs=rngs) for k in DECODER_RESIDUALS})

  def __call__(self, enc_outs, *, rngs=None):
    x = enc_outs[-1]
    outs = []
    for j, (layer, drop) in enumerate(zip(self.layers, self.dropouts)):
      layer_no = j + 1
      skip_from = 9 - layer_no  # encoder layer whose output matches this layer's input
      if skip_from in self.unet_skips:
        x = jnp.concatenate([x, enc_outs[skip_from - 1]], axis=-1)
      y = layer(x)
      if drop.rate > 0:
        y = drop(y, rngs=rngs)
      if str(layer_no - 2) in self.shortcuts:
        y = y + self.shortcuts[str(layer_no - 2)](outs[layer_no - 3])
      outs.append(y)
      x = y
    return x


class EncoderDecoder(nnx.Module):
  """One generator (G_bl or G_s): its own encoder and a decoder that may be shared."""

  def __init__(self, encoder: Encoder, decoder: Decoder):
    self.encoder = encoder
    self.decoder = decoder

  def __call__(self, x, *, rngs=None):
    """x: [-1, 1] (computation dtype); returns [-1, 1]."""
    return self.decoder(self.encoder(x), rngs=rngs)


class _FrozenHourglassMixin:
  """`model.train()` leaves a frozen stage-1 hourglass in eval mode (running BN statistics)."""

  def train(self, **attributes):
    out = super().train(**attributes)
    if self.freeze_hourglass:
      self.hourglass_module().eval()
    return out


class Chrysos2019Generator(_FrozenHourglassMixin, nnx.Module):
  """Inference graph of the 2019 method: frozen hourglass, then G_bl. No G_s.

  `__call__(images)` follows the generators' convention. With `freeze_hourglass` (the paper:
  "the weights were kept as constants in the training of the cGAN") the hourglass output is
  behind `stop_gradient` and the hourglass stays in eval mode under `model.train()`; load the
  stage-1 weights into `.hourglass` (or pass a trained `hourglass=`).
  """

  def __init__(self, *, ngf: int = 64, dropout: float = 0.5, unet_skips=(1, 2),
               order: str = "norm_act", hourglass: StackedHourglass | None = None,
               hg_stacks: int = 8, hg_features: int = 256, hg_modules: int = 1,
               freeze_hourglass: bool = True, decoder: Decoder | None = None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    self.freeze_hourglass = freeze_hourglass
    if hourglass is None:
      hourglass = StackedHourglass(n_stacks=hg_stacks, features=hg_features,
                                   n_modules=hg_modules, dtype=dtype, rngs=rngs)
    self.hourglass = hourglass
    if freeze_hourglass:
      hourglass.eval()
    if decoder is None:
      decoder = Decoder(ngf=ngf, dropout=dropout, unet_skips=unet_skips, order=order,
                        dtype=dtype, rngs=rngs)
    self.g_bl = EncoderDecoder(Encoder(6, ngf=ngf, order=order, dtype=dtype, rngs=rngs), decoder)

  def hourglass_module(self):
    return self.hourglass

  def stage1(self, images):
    """Hourglass output in [0, 1] (constant for the optimiser when frozen)."""
    hg = self.hourglass(images)
    return jax.lax.stop_gradient(hg) if self.freeze_hourglass else hg

  def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """images: [B, H, W, 3] in [0, 1], H and W multiples of 128. Float32 [0, 1] out."""
    h, w = images.shape[1:3]
    if h % 128 or w % 128:
      raise ValueError(f"chrysos2019 input height and width must be multiples of 128: {h}x{w}")
    x = jnp.concatenate([layers.to_signed(images, self.dtype),
                         layers.to_signed(self.stage1(images), self.dtype)], axis=-1)
    return layers.to_unit_interval(self.g_bl(x, rngs=rngs))


class IdentityPreservingGAN(_FrozenHourglassMixin, nnx.Module):
  """Training module of the 2019 generators: `generator` (hourglass + G_bl, exactly the
  inference module) and `identity_stream` (G_s: own encoder, the SAME decoder object).

  `__call__(images)` deblurs (G_bl); `reconstruct(sharp)` runs G_s; `both(blurry, sharp)`
  runs both streams. Parameters of the inference graph alone: `nnx.state(m.generator)`; in
  `nnx.state(m)` the shared decoder appears once, under `generator/g_bl/decoder`.
  """

  def __init__(self, *, ngf: int = 64, dropout: float = 0.5, unet_skips=(1, 2),
               order: str = "norm_act", hg_stacks: int = 8, hg_features: int = 256,
               hg_modules: int = 1, freeze_hourglass: bool = True, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.freeze_hourglass = freeze_hourglass
    self.generator = Chrysos2019Generator(
        ngf=ngf, dropout=dropout, unet_skips=unet_skips, order=order, hg_stacks=hg_stacks,
        hg_features=hg_features, hg_modules=hg_modules, freeze_hourglass=freeze_hourglass,
        dtype=dtype, rngs=rngs)
    self.identity_stream = EncoderDecoder(
        Encoder(3, ngf=ngf, order=order, dtype=dtype, rngs=rngs), self.generator.g_bl.decoder)

  def hourglass_module(self):
    return self.generator.hourglass

  @property
  def g_bl(self) -> EncoderDecoder:
    return self.generator.g_bl

  @property
  def g_s(self) -> EncoderDecoder:
    return self.identity_stream

  def __call__(self, images: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.generator(images, rngs=rngs)

  def reconstruct(self, sharp: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """G_s(I_s): the identity stream's reconstruction of the sharp image, float32 [0, 1]."""
    return layers.to_unit_interval(
        self.identity_stream(layers.to_signed(sharp, self.dtype), rngs=rngs))

  def both(self, blurry, sharp, *, rngs: nnx.Rngs | None = None):
    """(G_bl(I_bl), G_s(I_s))."""
    return self(blurry, rngs=rngs), self.reconstruct(sharp, rngs=rngs)


# --- what the trainer needs to know about this model (registered in fdeblur.models) -----------

HOURGLASS_PATH = ("generator", "hourglass")  # the stage-1 network inside IdentityPreservingGAN


def frozen_prefixes(cfg) -> tuple[str, ...]:
  """The frozen stage-1 hourglass ("the weights were kept as constants")."""
  return ("/".join(HOURGLASS_PATH),) if cfg.freeze_hourglass else ()


def load_pretrained(cfg, params: dict, model_state: dict) -> tuple[dict, dict]:
  """Grafts the stage-1 hourglass (weights and batch statistics) from the workdir named by
  `cfg.hourglass_checkpoint` (a run of configs/hourglass.py) into the training module's
  variables; nothing when it is ""."""
  path = cfg.hourglass_checkpoint
  if not path:
    return params, model_state
  import os  # pylint: disable=import-outside-toplevel

  from absl import logging  # pylint: disable=import-outside-toplevel

  from fdeblur import checkpoints, errors  # pylint: disable=import-outside-toplevel
  directory = os.path.join(path, "checkpoints")
  missing = errors.NoCheckpoint(f"config.model.hourglass_checkpoint={path!r}: no checkpoint in "
                                f"{directory} (train configs/hourglass.py there first)")
  if not errors.is_remote(directory) and not os.path.isdir(directory):
    raise missing  # (and nothing is created in a mistyped path)
  ckpt = checkpoints.Checkpointer(directory, keep=1, create=False)
  try:
    if ckpt.latest_step() is None:
      raise missing
    saved = ckpt.restore_raw()
  finally:
    ckpt.close()

  def like(target, loaded, where):
    # A target-less restore gives string keys where NNX lists have integers: follow the target.
    if isinstance(target, dict):
      if not isinstance(loaded, dict) or len(loaded) != len(target):
        raise ValueError(f"{path}: the hourglass there does not match config.model at {where} "
                         "(hg_stacks, hg_features, hg_modules must equal the stage-1 run's)")
      return {k: like(v, loaded.get(k, loaded.get(str(k))), f"{where}/{k}")
              for k, v in target.items()}
    if loaded is None or jnp.shape(loaded) != jnp.shape(target):
      raise ValueError(f"{path}: the hourglass there does not match config.model at {where}")
    return jnp.asarray(loaded, target.dtype)

  def graft(tree, loaded):
    outer, inner = HOURGLASS_PATH
    return {**tree, outer: {**tree[outer], inner: like(tree[outer][inner], loaded, inner)}}

  logging.info("Loaded the frozen stage-1 hourglass from %s", path)
  return graft(params, saved["params"]), graft(model_state, saved["model_state"])
