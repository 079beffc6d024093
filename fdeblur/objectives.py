"""What one training step optimises, per method. `make_step` builds the jit-compiled step:

- `supervised` (quickstart, chrysos2017, hourglass): weighted pixel (+ gradient, perceptual) loss;
- `gan` (fan_luo): discriminator updated `n_critic` times (WGAN-GP penalty when the kind is
  wgan_gp), then the generator on adversarial + content (perceptual, pixel) terms;
- `chrysos2019`: the cGAN of the 2019 paper, Eq. 6: L_cGAN + λci·L1 + λcg·L1(∇) + λp·projection
  on the discriminator's penultimate features + λr·reconstruction of the sharp-image stream G_s.

The blur is drawn on the device inside the step from (rng, step). Generator and discriminator
states live in one TrainState and are updated in the same compiled step; buffers are donated.
"""
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from fdeblur import degrade, losses, metrics, parallel
from fdeblur.degrade import averaging
from fdeblur.models import layers, vgg

OBJECTIVES = ("supervised", "gan", "chrysos2019")


def perceptual_params(config: ml_collections.ConfigDict, abstract: bool = False):
  """VGG19 weights for the perceptual loss, or None when the config does not use it.
  abstract: their shapes only (jax.ShapeDtypeStruct; no file is read, nothing allocated)."""
  if config.loss.perceptual_weight <= 0:
    return None
  layer = config.perceptual.layer
  if abstract:
    return jax.eval_shape(lambda: vgg.random_params(jax.random.PRNGKey(0), layer))
  if config.perceptual.weights == "random":
    logging.warning("config.perceptual.weights='random': the perceptual loss uses RANDOM VGG19 "
                    "weights. This is for tests only; name a VGG19 weights file for real runs.")
    return vgg.random_params(jax.random.PRNGKey(0), layer)
  return vgg.load_params(config.perceptual.weights, layer)


def degrade_input(batch: dict):
  """What `degrade` takes from a pipeline batch: the images, or for clip batches the frames and
  the face boxes (pipeline: x, y, w, h per frame; degrade: x_min, y_min, x_max, y_max) that VLA's
  facial-overlap condition needs."""
  if "frames" not in batch:
    return batch["image"]
  clip = {"frames": batch["frames"]}
  if "box" in batch:
    clip["boxes"] = averaging.corner_boxes(batch["box"])
  return clip


def _discriminate(d_nets, d_params, d_state, images, condition):
  """(logits, penultimate features or None, new state) of the discriminator in train mode."""
  args = (images, condition) if condition is not None else (images,)
  out, d_state = d_nets.apply(d_params, d_state, *args, train=True)
  logits, feats = out if isinstance(out, tuple) else (out, None)
  return logits, feats, d_state


def make_blur(blur_config, mesh):
  """(key, degrade input of a global batch) -> (blurry, sharp), as the step synthesises them.

  Each device blurs its own samples (jax.shard_map: no communication; left to the SPMD
  partitioner, the per-sample draws were all-gathered), and sample i's blur comes from key i of
  the global batch, so it does not depend on the mesh. FFT or direct convolution and how PSFs are
  splatted follow the platform of the mesh's devices (the target, also when compiling for a TPU
  on a CPU host)."""
  platform = mesh.devices.flat[0].platform
  per_shard = parallel.per_shard(
      lambda keys, x: degrade.degrade(keys, x, blur_config, platform)[:2], mesh, 2)

  def blur(key, x):
    size = jax.tree.leaves(x)[0].shape[0]
    return per_shard(jax.random.key_data(degrade.per_sample_keys(key, size)), x)

  return blur


def make_step(config, g_nets, d_nets, g_tx, d_tx, mesh):
  """(state, batch, vgg_params) -> (state, metrics). batch: {"image": uint8 [B, H, W, 3]} or a
  clip batch {"frames": uint8 [B, T, H, W, 3], ...} for the averaging protocols."""
  objective = config.objective
  if objective not in OBJECTIVES:
    raise ValueError(f"config.objective={objective!r} is not one of {OBJECTIVES}")
  if objective != "supervised" and d_nets is None:
    raise ValueError(f"config.objective={objective!r} needs config.discriminator.name")
  w = config.loss
  pixel = losses.pixel_loss(w.pixel, w.psnr_floor)
  gan = losses.gan_loss(config.gan.kind) if objective != "supervised" else None
  n_critic = config.gan.n_critic if gan else 0
  gp_weight = config.gan.gp_weight if gan and config.gan.kind == "wgan_gp" else 0.0
  conditional = objective == "chrysos2019" or config.gan.conditional
  ema_decay = config.train.ema_decay
  blur_percentiles = config.train.log_blur_percentiles
  vgg_layer = config.perceptual.layer

  def content_terms(out, sharp, vgg_params):
    terms = {"pixel": w.pixel_weight * pixel(out, sharp)}
    if w.gradient_weight > 0:
      terms["gradient"] = w.gradient_weight * losses.gradient_l1(out, sharp)
    if vgg_params is not None:
      f_out = vgg.features(vgg_params, out, vgg_layer)
      f_ref = jax.lax.stop_gradient(vgg.features(vgg_params, sharp, vgg_layer))
      terms["perceptual"] = w.perceptual_weight * losses.l2(f_out, f_ref)
    return terms

  def d_update(state, blurry, sharp, fake, key):
    cond = blurry if conditional else None
    d_params, d_state, d_opt = state.d_params, state.d_state, state.d_opt_state
    out = {}
    for i in range(n_critic):  # unrolled: n_critic is small and static

      def d_loss_fn(p):
        real_logits, _, s = _discriminate(d_nets, p, d_state, sharp, cond)
        fake_logits, _, s = _discriminate(d_nets, p, s, fake, cond)
        loss = gan.discriminator(real_logits, fake_logits)
        terms = {"d_adversarial": loss}
        if gp_weight:
          critic = lambda x: _discriminate(d_nets, p, s, x, cond)[0]
          terms["d_gradient_penalty"] = gp_weight * losses.gradient_penalty(
              critic, sharp, fake, jax.random.fold_in(key, i))
        return sum(terms.values()), (s, terms)

      (d_loss, (d_state, terms)), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      updates, d_opt = d_tx.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      out = {"d_loss": d_loss, **terms}
    return d_params, d_state, d_opt, out

  blur = make_blur(config.blur, mesh)

  def step_fn(state, batch, vgg_params):
    k_blur, k_drop, k_gp = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    blurry, sharp = blur(k_blur, degrade_input(batch))

    def g_forward(params):
      if objective == "chrysos2019":
        outs, model_state = g_nets.apply(params, state.model_state, blurry, sharp, train=True,
                                         dropout_key=k_drop, method="both")
      else:
        out, model_state = g_nets.apply(params, state.model_state, blurry, train=True,
                                        dropout_key=k_drop)
        outs = (out, None)
      return outs, model_state

    # The generator runs forward once: its output feeds the discriminator's update (as a
    # constant) and then the generator's loss, whose gradient is pulled back through the vjp.
    outs, g_vjp, model_state = jax.vjp(g_forward, state.params, has_aux=True)
    d_metrics = {}
    if gan:
      d_params, d_state, d_opt, d_metrics = d_update(state, blurry, sharp,
                                                     jax.lax.stop_gradient(outs[0]), k_gp)
      state = state.replace(d_params=d_params, d_state=d_state, d_opt_state=d_opt)

    def g_loss_fn(outs):
      out, rec = outs
      terms = content_terms(out, sharp, vgg_params)
      if gan:
        cond = blurry if conditional else None
        fake_logits, fake_feats, _ = _discriminate(d_nets, state.d_params, state.d_state, out,
                                                   cond)
        terms["adversarial"] = w.adversarial_weight * gan.generator(fake_logits)
        if w.projection_weight > 0:
          _, real_feats, _ = _discriminate(d_nets, state.d_params, state.d_state, sharp, cond)
          terms["projection"] = w.projection_weight * losses.projection(
              fake_feats, jax.lax.stop_gradient(real_feats))
      if objective == "chrysos2019":
        terms["reconstruction"] = w.reconstruction_weight * losses.l1(rec, sharp)
      return sum(terms.values()), terms

    (loss, terms), d_outs = jax.value_and_grad(g_loss_fn, has_aux=True)(outs)
    (grads,) = g_vjp(d_outs)
    out = outs[0]
    updates, opt_state = g_tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay > 0:
      ema = optax.incremental_update(params, ema, step_size=1.0 - ema_decay)
    state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                          opt_state=opt_state, ema_params=ema)
    psnr_in = jnp.minimum(metrics.psnr(blurry, sharp), 100.0)
    return state, {"loss": loss, **terms, **d_metrics,
                   # capped: an (almost) delta kernel leaves a sample unchanged, PSNR = inf
                   "psnr": jnp.mean(jnp.minimum(metrics.psnr(out, sharp), 100.0)),
                   "psnr_blurry": jnp.mean(psnr_in),
                   # how hard the batch's blur is (its spread, not only its mean); a
                   # percentile gathers the per-sample values: off unless asked for
                   **({f"psnr_blurry_p{q}": jnp.percentile(psnr_in, q) for q in (10, 50, 90)}
                      if blur_percentiles else {}),
                   "grad_norm": optax.tree.norm(grads)}

  platform = mesh.devices.flat[0].platform

  def step_for_target(state, batch, vgg_params):
    # the networks' convolutions take the formulation of the devices compiled for, also when
    # that is a TPU topology compiled on a CPU host (fdeblur.aot)
    with layers.target_platform(platform):
      return step_fn(state, batch, vgg_params)

  rep = parallel.replicated(mesh)
  return jax.jit(step_for_target, donate_argnums=0, out_shardings=(rep, rep))
