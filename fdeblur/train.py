"""Training: state, the jit-compiled data-parallel step, and the loop with checkpoints and logging."""
import os
import signal
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from fdeblur import checkpoints, degrade, losses, metrics, models, parallel, writers
from input_pipeline import pipeline


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict  # nnx.Param values as a pure dict
  model_state: dict  # other variables (batch statistics), pure dict
  opt_state: Any
  rng: jax.Array  # raw uint32 key: blur and dropout keys are folded from it with the step


class Networks:
  """The generator's graph (train and eval mode) and its initial variables."""

  def __init__(self, config: ml_collections.ConfigDict):
    model = models.create(config.model, nnx.Rngs(config.seed))
    model.train()
    self.train_graph, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    self.eval_graph = nnx.graphdef(model)
    self.params, self.model_state = params.to_pure_dict(), rest.to_pure_dict()

  def apply(self, params, model_state, images, *, train: bool, dropout_key=None):
    graph = self.train_graph if train else self.eval_graph
    model = nnx.merge(graph, params, model_state)
    rngs = nnx.Rngs(dropout=dropout_key) if dropout_key is not None else None
    out = model(images, rngs=rngs)
    return out, nnx.state(model, nnx.Not(nnx.Param)).to_pure_dict()


def learning_rate_schedule(cfg: ml_collections.ConfigDict):
  """cfg is `config.train`: constant, cosine, or step (multiplied by `decay_factor` every
  `decay_steps`, as the 2017 paper halves it every 15k steps)."""
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if kind == "cosine":
    return optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_steps)
  if kind == "step":
    return optax.exponential_decay(cfg.learning_rate, cfg.decay_steps, cfg.decay_factor,
                                   staircase=True)
  raise ValueError(f"config.train.schedule={kind!r} is not one of constant, cosine, step")


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.adam(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2)


def init_state(config, nets: Networks, tx) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=nets.params,
                    model_state=nets.model_state, opt_state=tx.init(nets.params),
                    rng=jax.random.PRNGKey(config.seed))


def make_train_step(config, nets: Networks, tx, mesh):
  """(state, uint8 sharp images [B, H, W, 3]) -> (state, metrics). The blur is drawn on the
  device inside the step from (rng, step), so every step sees new kernels."""
  loss_fn_pixel = losses.pixel_loss(config.train.loss)

  def step_fn(state: TrainState, images):
    sharp = images.astype(jnp.float32) / 255.0
    k_blur, k_drop = jax.random.split(jax.random.fold_in(state.rng, state.step))
    blurry, sharp, _ = degrade.degrade(k_blur, sharp, config.blur)

    def loss_fn(params):
      out, model_state = nets.apply(params, state.model_state, blurry, train=True,
                                    dropout_key=k_drop)
      return loss_fn_pixel(out, sharp), (out, model_state)

    (loss, (out, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params,
                                                                              updates),
                              model_state=model_state, opt_state=opt_state)
    out_metrics = {"loss": loss,
                   "psnr": jnp.mean(metrics.psnr(out, sharp)),
                   "psnr_blurry": jnp.mean(metrics.psnr(blurry, sharp)),
                   "grad_norm": optax.global_norm(grads)}
    return new_state, out_metrics

  rep = parallel.replicated(mesh)
  return jax.jit(step_fn, donate_argnums=0, out_shardings=(rep, rep))


def state_to_checkpoint(state: TrainState) -> dict:
  return flax.serialization.to_state_dict(state)


def state_from_checkpoint(target: TrainState, restored: dict) -> TrainState:
  return flax.serialization.from_state_dict(target, restored)


def restore_or_init(config, workdir, nets, tx, mesh):
  """Latest checkpoint in workdir placed on `mesh`, or a fresh state. Returns (state, ckpt)."""
  state = jax.device_put(init_state(config, nets, tx), parallel.replicated(mesh))
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is not None:
    restored = ckpt.restore(state_to_checkpoint(state))
    state = state_from_checkpoint(state, restored)
    logging.info("Resumed from %s at step %d", ckpt.directory, int(state.step))
  return state, ckpt


class _Preemption:
  """SIGTERM (preemption) asks the loop to checkpoint and stop at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  mesh = parallel.make_mesh()
  nets = Networks(config)
  tx = make_optimizer(config.train)
  state, ckpt = restore_or_init(config, workdir, nets, tx, mesh)
  start = int(state.step)
  total = config.train.num_steps
  if start >= total:
    logging.info("Checkpoint at step %d: training already finished", start)
    ckpt.close()
    return state

  step_fn = make_train_step(config, nets, tx, mesh)
  ds = pipeline.train_dataset(
      config.dataset, seed=config.seed,
      local_batch_size=parallel.local_batch_size(config.train.batch_size, mesh),
      process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipeline.iterate(ds, start, config.dataset)
  is_chief = jax.process_index() == 0
  writer = writers.MetricWriter(os.path.join(workdir, "tensorboard"), enabled=is_chief)
  rate = writers.Throughput(total, config.train.batch_size, start)
  preemption = _Preemption()
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("Training %s (%d parameters) on %d devices, steps %d..%d", config.model.name,
               n_params, mesh.size, start, total)
  try:
    for step in range(start + 1, total + 1):
      batch = parallel.global_batch(next(batches), mesh)
      state, step_metrics = step_fn(state, batch["image"])
      last = step == total
      if step % config.train.log_every == 0 or last:
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        if not np.isfinite(values["loss"]):
          raise FloatingPointError(f"non-finite loss {values['loss']} at step {step}")
        r = rate.update(step)
        writers.log_line(step, total, values, r)
        writer.scalars(step, {**{f"train/{k}": v for k, v in values.items()},
                              "train/images_per_sec": r["images_per_sec"]})
      if step % config.train.checkpoint_every == 0 or last or preemption.requested:
        ckpt.save(step, state_to_checkpoint(state), force=preemption.requested)
      if preemption.requested:
        break
  finally:
    preemption.restore()
    ckpt.close()
    writer.close()
  return state
