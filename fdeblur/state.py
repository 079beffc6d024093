"""What a run trains and stores: the TrainState, its optimisers, a fresh state, and restoring
one from a workdir (for resuming, evaluating and deblurring). Used by train.py, evaluate.py and
deblur.py; imports none of them."""
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from fdeblur import checkpoints, errors, models, networks, parallel, weights


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict  # nnx.Param values as a pure dict
  model_state: dict  # other variables (batch statistics), pure dict
  opt_state: Any
  ema_params: dict  # exponential moving average of params ({} when disabled)
  rng: jax.Array  # raw uint32 key: blur and dropout keys are folded from it with the step
  d_params: dict  # discriminator ({} without one)
  d_state: dict
  d_opt_state: Any


def learning_rate_schedule(cfg: ml_collections.ConfigDict):
  """cfg is `config.train`: constant, cosine, step (multiplied by `decay_factor` every
  `decay_steps`, as the 2017 paper halves it every 15k steps) or linear_decay (constant, then
  linearly to 0 from `decay_start`, as DeblurGAN), after a linear warmup from 0 over
  `warmup_steps` where set."""
  schedule, warmup = _base_schedule(cfg), int(cfg.warmup_steps)
  if not warmup:
    return schedule
  # Adam's first updates move every weight by ~lr whatever its gradient: ramp up from 0.
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.learning_rate, warmup),
       lambda step: schedule(step + warmup)], [warmup])


def _base_schedule(cfg: ml_collections.ConfigDict):
  kind = cfg.schedule
  if kind == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if kind == "cosine":
    return optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_steps)
  if kind == "step":
    return optax.exponential_decay(cfg.learning_rate, cfg.decay_steps, cfg.decay_factor,
                                   staircase=True)
  if kind == "linear_decay":
    return optax.join_schedules([
        optax.constant_schedule(cfg.learning_rate),
        optax.linear_schedule(cfg.learning_rate, 0.0, cfg.num_steps - cfg.decay_start)],
        [cfg.decay_start])
  raise ValueError(f"config.train.schedule={kind!r} is not one of constant, cosine, step, "
                   "linear_decay")


def make_optimizer(cfg: ml_collections.ConfigDict, frozen: tuple[str, ...] = ()):
  """Adam (default), SGD or RMSProp, as the config's paper trained. Parameters under a
  path prefix in `frozen` (see `models.frozen_prefixes`) are never updated."""
  lr = learning_rate_schedule(cfg)
  kind = cfg.optimizer
  if kind == "adam":
    tx = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
  elif kind == "sgd":
    tx = optax.sgd(lr, momentum=cfg.momentum or None)
  elif kind == "rmsprop":  # Newell et al.'s hourglass
    tx = optax.rmsprop(lr)
  else:
    raise ValueError(f"config.train.optimizer={kind!r} is not one of adam, sgd, rmsprop")
  if not frozen:
    return tx

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if _path_str(path).startswith(frozen) else "train", params)

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


class Trainable:
  """The networks of a config and their optimisers; `init_state()` is a fresh TrainState."""

  def __init__(self, config: ml_collections.ConfigDict, g_tx=None, abstract: bool = False):
    """abstract: the networks' variables and `init_state()` are jax.ShapeDtypeStruct trees
    (nnx.eval_shape / jax.eval_shape): nothing is allocated, no pretrained weights are read."""
    self.config, self.abstract = config, abstract
    self.g = networks.Networks.generator(config, abstract)
    self.d = networks.Networks.discriminator(config, abstract)
    self.g_tx = g_tx or make_optimizer(config.train, models.frozen_prefixes(config.model))
    self.d_tx = make_optimizer(config.train) if self.d else None

  def init_state(self, fine_tune: bool = True) -> TrainState:
    """fine_tune: start the generator from config.train.init_from (off when a checkpoint is
    about to replace the state: a resumed run does not need that folder any more)."""
    g, d = self.g, self.d
    params, model_state = g.params, g.model_state
    train = self.config.train
    if train.init_grow and not train.init_from:
      raise ValueError("config.train.init_grow=True needs config.train.init_from (the weights "
                       "to grow from)")
    if not self.abstract:  # only shapes matter for an abstract state
      params, model_state = models.load_pretrained(self.config.model, params, model_state)
      if train.init_from and fine_tune:  # the generator starts from exported weights
        params, model_state = weights.read(weights.resolve(train.init_from), params,
                                           model_state, train.init_grow)
    d_vars = (d.params, d.model_state) if d else ({}, {})
    build = jax.eval_shape if self.abstract else (lambda f, *args: f(*args))
    return build(self._initial_state, params, model_state, *d_vars)

  def _initial_state(self, params, model_state, d_params, d_state) -> TrainState:
    ema = params if self.config.train.ema_decay > 0 else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
        opt_state=self.g_tx.init(params), ema_params=jax.tree.map(jnp.copy, ema),
        rng=jax.random.PRNGKey(self.config.seed), d_params=d_params, d_state=d_state,
        d_opt_state=self.d_tx.init(d_params) if self.d else {})


def state_to_checkpoint(state: TrainState) -> dict:
  return flax.serialization.to_state_dict(state)


def state_from_checkpoint(target: TrainState, restored: dict) -> TrainState:
  return flax.serialization.from_state_dict(target, restored)


def checkpointer(config, workdir) -> checkpoints.Checkpointer:
  return checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=config.train.keep_checkpoints)


def restore_or_init(trainable: Trainable, ckpt: checkpoints.Checkpointer, mesh) -> TrainState:
  """The latest checkpoint of `ckpt` placed on `mesh` (any mesh shape), or a fresh state."""
  resume = ckpt.latest_step() is not None
  state = jax.device_put(trainable.init_state(fine_tune=not resume), parallel.replicated(mesh))
  if resume:
    state = state_from_checkpoint(
        state, ckpt.restore(state_to_checkpoint(state), config=trainable.config))
    logging.info("Resumed from %s at step %d", ckpt.directory, int(state.step))
  return state


def restore_for_evaluation(config, workdir) -> tuple[networks.Networks, TrainState]:
  """(generator networks, newest readable TrainState) of a workdir, creating nothing there;
  errors.NoCheckpoint (a FileNotFoundError) without one."""
  directory = os.path.join(workdir, "checkpoints")
  if not errors.is_remote(directory) and not os.path.isdir(directory):
    what = "no such folder" if not os.path.isdir(workdir) else "no checkpoints/ folder in it"
    raise errors.NoCheckpoint(f"no checkpoint to evaluate in {workdir} ({what}): train there "
                              "first, or check the path")
  ckpt = checkpoints.Checkpointer(directory, keep=config.train.keep_checkpoints, create=False)
  try:
    if ckpt.latest_step() is None:
      raise errors.NoCheckpoint(f"no checkpoint to evaluate in {ckpt.directory}: train there "
                                "first, or check the path")
    trainable = Trainable(config)
    return trainable.g, restore_or_init(trainable, ckpt, parallel.make_mesh(config.mesh_shape))
  finally:
    ckpt.close()
