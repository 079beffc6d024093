"""The papers' networks: shapes, parameter counts from the papers' layer tables, the 2019 shared
decoder and inference graph, mixed precision, registry.

Parameter counts are recomputed here from the layer tables written out as data
(kernel, c_in, c_out, bias, normalisation parameters), never read back from the modules' code.
Full-size models are only built abstractly (nnx.eval_shape); real forwards use tiny widths.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fdeblur import models
from fdeblur.models import (Chrysos2019Discriminator, Chrysos2019Generator, DeblurGANGenerator,
                            IdentityPreservingGAN, PatchGANDiscriminator, ResNetDeblur,
                            StackedHourglass, count_params)

BN = "bn"  # batch norm: scale + bias per channel; instance norm (DeblurGAN) has none


def table_count(rows):
  """Sum over (kernel, c_in, c_out, bias, norm) rows of a layer table."""
  total = 0
  for k, cin, cout, bias, norm in rows:
    total += k * k * cin * cout + (cout if bias else 0) + (2 * cout if norm == BN else 0)
  return total


def bn_only(channels):
  return (0, 0, channels, False, BN)


def abstract(build):
  return nnx.eval_shape(lambda: build(nnx.Rngs(0)))


@functools.lru_cache(maxsize=None)
def paper_model(name):
  """Full-size models, built abstractly once per session."""
  return abstract({
      "resnet_deblur": lambda r: ResNetDeblur(rngs=r),
      "hourglass": lambda r: StackedHourglass(n_stacks=1, rngs=r),
      "gan": lambda r: IdentityPreservingGAN(hg_stacks=1, rngs=r),
      "deblurgan": lambda r: DeblurGANGenerator(rngs=r),
      "patchgan": lambda r: PatchGANDiscriminator(rngs=r),
      "d2019": lambda r: Chrysos2019Discriminator(rngs=r),
  }[name])


def rand(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def key(seed):
  # RngBitGenerator keys: building a model draws ~100-300 initialisers, and threefry's
  # per-shape compilations make that 3x slower on CPU. Values differ, properties do not.
  return jax.random.key(seed, impl="rbg")


def rngs(seed=0):
  return nnx.Rngs(key(seed))


# Tiny forwards run for milliseconds; LLVM's optimisation of their graphs is most of the test
# time (HLO passes, hence numerics, are unchanged).
@functools.partial(jax.jit, static_argnames=("graph", "method"),
                   compiler_options={"xla_backend_optimization_level": 0})
def _apply(graph, state, args, key, method):
  m = nnx.merge(graph, state)
  fn = getattr(m, method) if method else m
  return fn(*args, rngs=nnx.Rngs(dropout=key)) if key is not None else fn(*args)


def run(model, *args, train=False, key=None, method=None):
  """jit-compiled call of `model` (or `model.method`) in train or eval mode (one compilation
  per graph, mode, dtype and shapes for the whole session)."""
  model.train() if train else model.eval()
  graph, state = nnx.split(model)
  return _apply(graph, state, args, key, method)


# ----------------------------------------------------------------------------------------------
# Layer tables of the papers, as data.

def deblurgan_rows(ngf=64, n_blocks=6):
  """DeblurGAN's ResnetGenerator (Fan & Luo's processor): convs with bias, IN without affine."""
  rows = [(7, 3, ngf, True, None), (3, ngf, 2 * ngf, True, None),
          (3, 2 * ngf, 4 * ngf, True, None)]
  rows += [(3, 4 * ngf, 4 * ngf, True, None)] * (2 * n_blocks)
  rows += [(3, 4 * ngf, 2 * ngf, True, None), (3, 2 * ngf, ngf, True, None),
           (7, ngf, 3, True, None)]
  return rows


PATCHGAN_ROWS = [(4, 3, 64, True, None), (4, 64, 128, True, None), (4, 128, 256, True, None),
                 (4, 256, 512, True, None), (4, 512, 1, True, None)]
D2019_ROWS = [(4, 6, 64, True, None), (4, 64, 128, False, BN), (4, 128, 256, False, BN),
              (4, 256, 512, False, BN), (4, 512, 1, True, None)]

# He et al. 2016, Table 1, 50-layer: [1x1, w; 3x3, w; 1x1, 4w] x n per stage.
RESNET50_STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]


def resnet50_rows(skip_stages=(1, 2)):
  rows = [(7, 3, 64, False, BN)]  # conv1 (max-pool removed: no parameters either way)
  cin, outs = 64, {}
  for s, (w, n) in enumerate(RESNET50_STAGES, start=1):
    for u in range(n):
      rows += [(1, cin, w, False, BN), (3, w, w, False, BN), (1, w, 4 * w, False, BN)]
      if u == 0:  # projection shortcut
        rows.append((1, cin, 4 * w, False, BN))
      cin = 4 * w
    outs[s] = cin
  taps = [outs[s] for s in skip_stages] + [outs[4]]
  rows += [bn_only(c) for c in taps]  # "a batch normalisation ... in every skip connection"
  rows.append((1, sum(taps), 3, True, None))  # the linear map to the image
  return rows


def newell_residual(cin, cout):
  mid = cout // 2
  rows = [bn_only(cin), (1, cin, mid, True, None), bn_only(mid), (3, mid, mid, True, None),
          bn_only(mid), (1, mid, cout, True, None)]
  return rows + ([(1, cin, cout, True, None)] if cin != cout else [])


def hourglass_rows(n_stacks, f=256, depth=4):
  rows = [(7, 3, f // 4, True, BN)]  # 7x7/2 conv, 64 at F = 256
  rows += newell_residual(f // 4, f // 2) + newell_residual(f // 2, f // 2)
  rows += newell_residual(f // 2, f)
  per_hourglass = 3 * depth + 1  # up1, low1, low3 per level, one residual at the bottom
  for i in range(n_stacks):
    rows += newell_residual(f, f) * (per_hourglass + 1)  # + the residual after the hourglass
    rows += [(1, f, f, True, BN), (1, f, 3, True, None)]  # lin, prediction
    if i < n_stacks - 1:
      rows += [(1, f, f, True, None), (1, 3, f, True, None)]  # mapped back into the features
  # full-resolution image head: two transposed convs with BN, 7x7 conv to the image
  rows += [(3, f, f // 2, True, BN), (3, f // 2, f // 4, True, BN), (7, f // 4, 3, True, None)]
  return rows


def table3_encoder_rows(cin, g=64):
  """Table 3 (a): conv, BN (no conv bias before a BN), residual projections (1x1, bias) after
  layers 1 (64->256), 3 (256->512) and 5 (512->512: parameter-free)."""
  return [(4, cin, g, True, None), (4, g, 2 * g, False, BN), (4, 2 * g, 4 * g, False, BN),
          (4, 4 * g, 8 * g, False, BN), (4, 8 * g, 8 * g, False, BN), (4, 8 * g, 8 * g, False, BN),
          (4, 8 * g, 8 * g, False, BN), (1, 8 * g, 4 * g, False, BN),
          (1, g, 4 * g, True, None), (1, 4 * g, 8 * g, True, None)]


def table3_decoder_rows(g=64):
  """Table 3 (b); U-net skips from encoder layers 2 and 1 widen F-Conv 7 and 8's inputs;
  residual projections after layers 1 (1024->512) and 3 (512->256)."""
  return [(1, 4 * g, 16 * g, False, BN), (4, 16 * g, 8 * g, False, BN),
          (4, 8 * g, 8 * g, False, BN), (4, 8 * g, 8 * g, False, BN), (4, 8 * g, 4 * g, False, BN),
          (4, 4 * g, 2 * g, False, BN), (4, 2 * g + 2 * g, g, False, BN), (4, g + g, 3, True, None),
          (1, 16 * g, 8 * g, True, None), (1, 8 * g, 4 * g, True, None)]


# ----------------------------------------------------------------------------------------------
# Parameter counts.

def test_deblurgan_and_discriminator_counts_match_their_tables():
  assert table_count(deblurgan_rows()) == 7_837_699
  assert count_params(paper_model("deblurgan")) == 7_837_699
  assert count_params(abstract(lambda r: DeblurGANGenerator(n_blocks=9, rngs=r))) == \
      table_count(deblurgan_rows(n_blocks=9))
  assert table_count(PATCHGAN_ROWS) == 2_764_737  # "about 2.76 M"
  assert count_params(paper_model("patchgan")) == 2_764_737
  assert count_params(paper_model("d2019")) == table_count(D2019_ROWS)


def test_resnet_and_hourglass_counts_match_their_tables():
  assert count_params(paper_model("resnet_deblur")) == table_count(resnet50_rows())
  assert count_params(abstract(lambda r: ResNetDeblur(skip_blocks=(1, 3), rngs=r))) == \
      table_count(resnet50_rows((1, 3)))
  assert count_params(paper_model("hourglass")) == table_count(hourglass_rows(1))
  # the connections between stacks, at reduced width (the table is the same in F)
  assert count_params(abstract(lambda r: StackedHourglass(n_stacks=2, features=32, rngs=r))) \
      == table_count(hourglass_rows(2, f=32))


def test_2019_generators_match_table3_and_share_one_decoder():
  gan = paper_model("gan")
  hg, enc_bl = table_count(hourglass_rows(1)), table_count(table3_encoder_rows(6))
  enc_s, dec = table_count(table3_encoder_rows(3)), table_count(table3_decoder_rows())
  assert count_params(gan.g_bl) == enc_bl + dec
  assert count_params(gan.g_s) == enc_s + dec
  assert count_params(gan.generator) == hg + enc_bl + dec
  # the decoder is held once: not hg + 2 * (encoder + decoder)
  assert count_params(gan) == hg + enc_bl + enc_s + dec
  assert gan.g_bl.decoder is gan.g_s.decoder


# ----------------------------------------------------------------------------------------------
# Shapes.

def test_every_network_at_256_batch_1():
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  gan = paper_model("gan")
  for name, model in [("resnet_deblur", paper_model("resnet_deblur")),
                      ("hourglass", paper_model("hourglass")), ("chrysos2019", gan.generator),
                      ("deblurgan", paper_model("deblurgan"))]:
    model.eval()
    out = jax.eval_shape(lambda m, x: m(x), model, x)
    assert (out.shape, out.dtype) == ((1, 256, 256, 3), jnp.float32), name
  _, preds = jax.eval_shape(lambda m, x: m(x, intermediate_outputs=True),
                            paper_model("hourglass"), x)
  assert [p.shape for p in preds] == [(1, 64, 64, 3)]
  gan.eval()
  sharp = jax.eval_shape(lambda m, x: m.reconstruct(x), gan, x)
  assert (sharp.shape, sharp.dtype) == ((1, 256, 256, 3), jnp.float32)
  # Table 3's encoder at 256x256, down to the 2x2x256 code
  enc = jax.eval_shape(lambda m, x: m.g_s.encoder(x), gan, x)
  assert [e.shape[1:] for e in enc] == [(256, 256, 64), (128, 128, 128), (64, 64, 256),
                                        (32, 32, 512), (16, 16, 512), (8, 8, 512), (4, 4, 512),
                                        (2, 2, 256)]
  # PatchGAN with DeblurGAN's padding 2: 256 -> 129 -> 65 -> 33 -> 34 -> 35
  assert jax.eval_shape(lambda m, x: m(x), paper_model("patchgan"), x).shape == (1, 35, 35, 1)
  # pix2pix 70x70 PatchGAN (padding 1): 30x30 logits, 31x31x512 penultimate features
  d = paper_model("d2019")
  d.eval()
  logits, feats = jax.eval_shape(lambda m, x: m(x, x), d, x)
  assert (logits.shape, feats.shape) == ((1, 30, 30, 1), (1, 31, 31, 512))


@functools.lru_cache(maxsize=None)
def tiny_gan(dtype=jnp.float32):
  """The 2019 training module at tiny widths (the paper's structure), built once per dtype."""
  return IdentityPreservingGAN(ngf=2, hg_stacks=1, hg_features=8, dtype=dtype, rngs=rngs(0))


TINY = {  # name: (build(dtype), input size)
    "resnet_deblur": (lambda d: ResNetDeblur(width=4, dtype=d, rngs=rngs(0)), 32),
    "hourglass": (lambda d: StackedHourglass(n_stacks=2, features=8, dtype=d, rngs=rngs(0)), 64),
    # hourglass + G_bl at the paper's 256 (at 128 the 1x1 code is batch-normalised over 2 values)
    "chrysos2019": (lambda d: tiny_gan(d).generator, 256),
    "deblurgan": (lambda d: DeblurGANGenerator(ngf=4, dtype=d, rngs=rngs(0)), 32),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_and_bfloat16(name):
  build, size = TINY[name]
  model = build(jnp.float32)
  x = rand((2, size, size, 3))
  dropout = key(1)
  train, evaluated = run(model, x, train=True, key=dropout), run(model, x)
  for y in (train, evaluated):
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y))) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float(jnp.std(y)) > 1e-3  # not a constant image
  assert float(jnp.abs(train - evaluated).max()) > 1e-4  # batch stats / dropout vs eval mode
  # bfloat16 computation, same parameters (and statistics), same dropout mask
  bf16 = build(jnp.bfloat16)
  nnx.update(bf16, nnx.state(model))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  y16 = run(bf16, x, train=True, key=dropout)
  assert y16.dtype == jnp.float32
  assert float(jnp.abs(y16 - train).max()) > 0  # the computation did run in bfloat16
  rel = float(jnp.linalg.norm(y16 - train) / jnp.linalg.norm(train))
  assert rel < 1e-2, rel


def test_discriminators_tiny():
  x = rand((2, 32, 32, 3))
  d = PatchGANDiscriminator(ndf=4, rngs=rngs(0))
  logits = run(d, x)
  assert logits.shape == (2, 7, 7, 1) and float(jnp.abs(logits).max()) > 0  # 32->17->9->5->6->7
  probs = run(PatchGANDiscriminator(ndf=4, sigmoid=True, rngs=rngs(0)), x)
  np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), atol=1e-6)
  d = Chrysos2019Discriminator(ndf=4, rngs=rngs(0))
  logits, feats = run(d, x, rand((2, 32, 32, 3), 1), train=True)
  assert logits.shape == (2, 2, 2, 1) and feats.shape == (2, 3, 3, 32)
  # the penultimate features are what the logits are computed from
  np.testing.assert_allclose(d.out(feats), logits, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The 2019 identity stream: one decoder, two streams; inference without G_s.

def test_shared_decoder_is_one_set_of_variables():
  gan = tiny_gan()
  params = nnx.to_pure_dict(nnx.state(gan, nnx.Param))
  assert "decoder" not in params["identity_stream"]  # held once, under generator/g_bl
  assert set(params["identity_stream"]) == {"encoder"}
  graph, state = nnx.split(gan)
  again = nnx.merge(graph, state)
  assert again.g_bl.decoder is again.g_s.decoder


def test_updating_the_shared_decoder_changes_both_streams():
  gan = tiny_gan()
  x, s = rand((2, 128, 128, 3), 0), rand((2, 128, 128, 3), 1)
  bl0, s0 = run(gan, x, s, train=True, key=key(3), method="both")
  kernel = gan.g_bl.decoder.layers[3].conv.kernel
  old = kernel[...]
  kernel[...] = old + 0.05 * jax.random.normal(jax.random.key(2), old.shape)
  try:
    bl1, s1 = run(gan, x, s, train=True, key=key(3), method="both")
  finally:
    kernel[...] = old
  assert float(jnp.abs(bl1 - bl0).max()) > 1e-4
  assert float(jnp.abs(s1 - s0).max()) > 1e-4
  # control: changing G_s's own encoder leaves G_bl alone
  kernel = gan.g_s.encoder.layers[2].conv.kernel
  old = kernel[...]
  kernel[...] = old + 0.05
  try:
    bl2, s2 = run(gan, x, s, train=True, key=key(3), method="both")
  finally:
    kernel[...] = old
  np.testing.assert_array_equal(bl2, bl0)
  assert float(jnp.abs(s2 - s0).max()) > 1e-4


def test_gradients_reach_the_decoder_from_each_stream_alone():
  gan = tiny_gan()
  gan.train()
  graph, params, rest = nnx.split(gan, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  x, s = rand((2, 128, 128, 3), 0), rand((2, 128, 128, 3), 1)

  @functools.partial(jax.jit, static_argnames="stream",
                     compiler_options={"xla_backend_optimization_level": 0})
  def grads(params, rest, stream):
    def loss(p):
      m = nnx.merge(graph, p, rest)
      drop = nnx.Rngs(dropout=key(4))
      out = m(x, rngs=drop) if stream == "bl" else m.reconstruct(s, rngs=drop)
      return jnp.mean(jnp.abs(out - s))
    return jax.grad(loss)(params)

  def norms(stream):
    g = grads(params, rest, stream)
    total = lambda t: float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree.leaves(t)))
    return (total(g["generator"]["g_bl"]["decoder"]), total(g["generator"]["g_bl"]["encoder"]),
            total(g["identity_stream"]["encoder"]), total(g["generator"]["hourglass"]))

  dec, enc_bl, enc_s, hg = norms("bl")
  assert dec > 0 and enc_bl > 0 and enc_s == 0 and hg == 0  # hourglass frozen
  dec, enc_bl, enc_s, hg = norms("s")
  assert dec > 0 and enc_s > 0 and enc_bl == 0 and hg == 0


def test_inference_graph_has_no_identity_stream():
  gan = tiny_gan()
  inference = gan.generator
  assert "identity_stream" not in nnx.to_pure_dict(nnx.state(inference, nnx.Param))
  assert count_params(inference) == count_params(gan) - count_params(gan.g_s.encoder)
  x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  inference.eval()
  gan.eval()
  infer_jaxpr = jax.make_jaxpr(lambda st, x: nnx.merge(nnx.graphdef(inference), st)(x))(
      nnx.state(inference), x)
  train_jaxpr = jax.make_jaxpr(lambda st, x: nnx.merge(nnx.graphdef(gan), st).both(x, x))(
      nnx.state(gan), x)
  assert len(infer_jaxpr.jaxpr.invars) < len(train_jaxpr.jaxpr.invars)
  # the registry's "chrysos2019" generator is the inference graph; create_training has both
  cfg = models.model_config("chrysos2019", ngf=2, hg_stacks=1, hg_features=8)
  made = nnx.eval_shape(lambda: models.create(cfg, nnx.Rngs(0)))
  assert isinstance(made, Chrysos2019Generator) and not hasattr(made, "identity_stream")
  made = nnx.eval_shape(lambda: models.create_training(cfg, nnx.Rngs(0)))
  assert isinstance(made, IdentityPreservingGAN)
  assert count_params(made) == count_params(gan)


def test_frozen_hourglass_stays_in_eval_mode_in_training():
  gan = tiny_gan()
  gan.train()
  assert gan.generator.hourglass.stem.norm.use_running_average  # running stats, frozen
  assert not gan.g_bl.decoder.layers[1].norm.use_running_average
  gen = nnx.eval_shape(lambda: Chrysos2019Generator(ngf=2, hg_stacks=1, hg_features=8,
                                                    freeze_hourglass=False, rngs=nnx.Rngs(0)))
  gen.train()
  assert not gen.hourglass.stem.norm.use_running_average


# ----------------------------------------------------------------------------------------------
# Registry.

def test_registry_reads_options_with_paper_defaults():
  assert set(models.REGISTRY) == {"resnet_deblur", "hourglass", "chrysos2019", "deblurgan"}
  cfg = models.model_config("resnet_deblur", width=4, depth=18, dtype="bfloat16")
  m = nnx.eval_shape(lambda: models.create(cfg, nnx.Rngs(0)))
  assert isinstance(m, ResNetDeblur) and m.dtype == jnp.bfloat16 and len(m.stages[0]) == 2
  m = nnx.eval_shape(lambda: models.create(models.model_config("resnet_deblur"), nnx.Rngs(0)))
  assert count_params(m) == table_count(resnet50_rows())
  m = nnx.eval_shape(lambda: models.create(models.model_config("deblurgan"), nnx.Rngs(0)))
  assert count_params(m) == 7_837_699
  cfg = models.model_config("hourglass", n_stacks=1)
  assert count_params(nnx.eval_shape(lambda: models.create(cfg, nnx.Rngs(0)))) == \
      table_count(hourglass_rows(1))
  with pytest.raises(ValueError, match="not one of"):
    models.model_config("unet")
  d = nnx.eval_shape(lambda: models.create_discriminator(
      models.discriminator_config("patchgan"), nnx.Rngs(0)))
  assert isinstance(d, PatchGANDiscriminator) and count_params(d) == 2_764_737
  d = nnx.eval_shape(lambda: models.create_discriminator(
      models.discriminator_config("chrysos2019"), nnx.Rngs(0)))
  assert isinstance(d, Chrysos2019Discriminator) and count_params(d) == table_count(D2019_ROWS)


def test_model_options_are_the_constructor_signature():
  cfg = models.model_config("resnet_deblur")
  assert (cfg.depth, cfg.width, tuple(cfg.skip_blocks)) == (50, 64, (1, 2))
  assert models.model_config("chrysos2019").hourglass_checkpoint == ""  # an entry's extra key
  with pytest.raises(KeyError, match="no option 'widht'"):
    models.model_config("resnet_deblur", widht=3)
  # a section built for another model is refused with the way out
  cfg = models.model_config("deblurgan")
  cfg.name = "hourglass"
  with pytest.raises(ValueError, match="model_config"):
    models.create(cfg, nnx.Rngs(0))
  assert models.frozen_prefixes(models.model_config("chrysos2019")) == ("generator/hourglass",)
  assert models.frozen_prefixes(
      models.model_config("chrysos2019", freeze_hourglass=False)) == ()
  assert models.frozen_prefixes(models.model_config("deblurgan")) == ()


def test_zero_head_starts_as_the_identity_and_learns_away_from_it():
  x = rand((2, 32, 32, 3))
  model = DeblurGANGenerator(ngf=4, n_blocks=1, dropout=0.0, zero_head=True, rngs=rngs(0))
  # exactly the input (up to the [-1, 1] round trip), before any training
  np.testing.assert_allclose(np.asarray(run(model, x, train=True)), np.asarray(x), atol=1e-6)
  default = DeblurGANGenerator(ngf=4, n_blocks=1, dropout=0.0, rngs=rngs(0))
  assert float(jnp.abs(run(default, x) - x).mean()) > 1e-2  # DeblurGAN's head adds a residual
  # the zero head still receives a gradient (everything before it receives one after a step);
  # jit-compiled: op by op, every primitive of the backward pass compiles on its own (~10x slower)
  grads = nnx.jit(nnx.grad(lambda m: jnp.mean((m(x) - 0.5) ** 2)))(model)
  assert float(jnp.abs(grads.head.kernel[...]).max()) > 0
