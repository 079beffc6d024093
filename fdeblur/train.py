"""Training: state, the jit-compiled data-parallel step, and the loop with checkpoints, logging,
validation and preemption handling."""
import json
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

from fdeblur import checkpoints, evaluate, networks, objectives, parallel, writers
from input_pipeline import pipeline


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
  linearly to 0 from `decay_start`, as DeblurGAN)."""
  kind = cfg.get("schedule", "constant")
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
  path in `frozen` (the stage-1 hourglass of chrysos2019) are never updated."""
  lr = learning_rate_schedule(cfg)
  kind = cfg.get("optimizer", "adam")
  if kind == "adam":
    tx = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
  elif kind == "sgd":
    tx = optax.sgd(lr, momentum=cfg.get("momentum", 0.0) or None)
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


def frozen_paths(config) -> tuple[str, ...]:
  if config.model.name == "chrysos2019" and config.model.get("freeze_hourglass", True):
    return ("generator/hourglass",)
  return ()


class Setup:
  """Everything a config trains: networks, optimisers, the compiled step, the VGG weights."""

  def __init__(self, config, mesh, g_tx=None):
    self.config, self.mesh = config, mesh
    self.g = networks.Networks.generator(config)
    self.d = networks.Networks.discriminator(config)
    self.g_tx = g_tx or make_optimizer(config.train, frozen_paths(config))
    self.d_tx = make_optimizer(config.train) if self.d else None
    self.vgg = objectives.perceptual_params(config)
    if self.vgg is not None:
      self.vgg = jax.device_put(self.vgg, parallel.replicated(mesh))
    self._step = objectives.make_step(config, self.g, self.d, self.g_tx, self.d_tx, mesh)

  def step(self, state, batch):
    """One training step on a global batch dict ({"image": ...} or a clip batch)."""
    return self._step(state, batch, self.vgg)

  def init_state(self) -> TrainState:
    g, d = self.g, self.d
    params, model_state = g.params, g.model_state
    if self.config.model.get("hourglass_checkpoint"):
      params, model_state = load_stage1(self.config, params, model_state)
    ema = params if self.config.train.get("ema_decay", 0.0) > 0 else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
        opt_state=self.g_tx.init(params), ema_params=jax.tree.map(jnp.copy, ema),
        rng=jax.random.PRNGKey(self.config.seed), d_params=d.params if d else {},
        d_state=d.model_state if d else {}, d_opt_state=self.d_tx.init(d.params) if d else {})


def load_stage1(config, params: dict, model_state: dict) -> tuple[dict, dict]:
  """chrysos2019: the stage-1 hourglass (weights and batch statistics) from the workdir named by
  config.model.hourglass_checkpoint (a run of configs/hourglass.py), kept frozen."""
  path = config.model.hourglass_checkpoint
  ckpt = checkpoints.Checkpointer(os.path.join(path, "checkpoints"), keep=1)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"config.model.hourglass_checkpoint={path!r}: no checkpoint in "
                              f"{ckpt.directory} (train configs/hourglass.py there first)")
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
    if loaded is None or np.shape(loaded) != np.shape(target):
      raise ValueError(f"{path}: the hourglass there does not match config.model at {where}")
    return jnp.asarray(loaded, target.dtype)

  def graft(tree, loaded):
    hourglass = like(tree["generator"]["hourglass"], loaded, "hourglass")
    return {**tree, "generator": {**tree["generator"], "hourglass": hourglass}}

  logging.info("Loaded the frozen stage-1 hourglass from %s", path)
  return graft(params, saved["params"]), graft(model_state, saved["model_state"])


def state_to_checkpoint(state: TrainState) -> dict:
  return flax.serialization.to_state_dict(state)


def state_from_checkpoint(target: TrainState, restored: dict) -> TrainState:
  return flax.serialization.from_state_dict(target, restored)


def _checkpointer(config, workdir):
  return checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=config.train.keep_checkpoints)


def restore_or_init(config, workdir, setup: "Setup", ckpt=None):
  """The latest checkpoint in workdir placed on `setup.mesh` (any mesh shape), or a fresh
  state."""
  state = jax.device_put(setup.init_state(), parallel.replicated(setup.mesh))
  ckpt = ckpt or _checkpointer(config, workdir)
  if ckpt.latest_step() is not None:
    state = state_from_checkpoint(state, ckpt.restore(state_to_checkpoint(state)))
    logging.info("Resumed from %s at step %d", ckpt.directory, int(state.step))
  return state


def restore_for_evaluation(config, workdir) -> TrainState:
  ckpt = _checkpointer(config, workdir)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint to evaluate in {ckpt.directory}")
    mesh = parallel.make_mesh(config.get("mesh_shape", ()))
    return restore_or_init(config, workdir, Setup(config, mesh), ckpt)
  finally:
    ckpt.close()


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


class _Validation:
  """Validation PSNR/SSIM on a fixed subset of the test split with the evaluation blur; keeps
  the best checkpoint by PSNR in workdir/best/ and logs an image grid."""

  def __init__(self, config, workdir, nets, writer):
    self.config, self.nets, self.writer = config, nets, writer
    n = config.eval.get("num_validation", 32)
    self.images = pipeline.eval_examples(config.dataset)["image"][:n]
    self.best = checkpoints.Checkpointer(os.path.join(workdir, "best"), keep=1, best="psnr")

  def __call__(self, step, state):
    blurry, deblurred, m = evaluate.score(self.config, self.nets, state, self.images)
    values = {k: float(np.mean(v)) for k, v in m.items()}
    logging.info("validation at step %d: PSNR %.2f dB (blurred %.2f), SSIM %.4f", step,
                 values["psnr_deblurred"], values["psnr_blurred"], values["ssim_deblurred"])
    self.writer.scalars(step, {f"val/{k}": v for k, v in values.items()})
    rows = min(4, len(blurry))
    sharp = self.images[:rows].astype(np.float32) / 255.0
    grid = np.concatenate([np.concatenate([blurry[i], deblurred[i], sharp[i]], axis=1)
                           for i in range(rows)], axis=0)
    self.writer.image(step, "val/blurry_output_sharp", grid)
    self.best.save(step, state_to_checkpoint(state), metrics={"psnr": values["psnr_deblurred"]})
    return values

  def close(self):
    self.best.close()


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  mesh = parallel.make_mesh(config.get("mesh_shape", ()))
  setup = Setup(config, mesh)
  ckpt = _checkpointer(config, workdir)
  state = restore_or_init(config, workdir, setup, ckpt)
  start, total = int(state.step), config.train.num_steps
  if start >= total:
    logging.info("Checkpoint at step %d: training already finished", start)
    ckpt.close()
    return state

  ds = pipeline.train_dataset(
      config.dataset, seed=config.seed,
      local_batch_size=parallel.local_batch_size(config.train.batch_size, mesh),
      process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipeline.iterate(ds, start, config.dataset)
  is_chief = jax.process_index() == 0
  writer = writers.MetricWriter(os.path.join(workdir, "tensorboard"), enabled=is_chief)
  history = open(os.path.join(workdir, "train_log.jsonl"), "a") if is_chief else None
  validate = _Validation(config, workdir, setup.g, writer) if config.eval.get("every", 0) else None
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  rate = writers.Throughput(total, config.train.batch_size, start)
  preemption = _Preemption()
  logging.info("Training %s (%d parameters) on a %s mesh of %d devices, steps %d..%d",
               config.model.name, sum(x.size for x in jax.tree.leaves(state.params)),
               dict(mesh.shape), mesh.size, start, total)
  window = []  # metrics of the steps since the last log line, still on the device
  try:
    for step in range(start + 1, total + 1):
      batch = parallel.global_batch(next(batches), mesh)
      state, step_metrics = setup.step(state, batch)
      window.append(step_metrics)
      last = step == total
      if step % config.train.log_every == 0 or last or preemption.requested:
        fetched = jax.device_get(window)
        for i, m in enumerate(fetched):  # name the exact step that went wrong
          if not np.isfinite(m["loss"]):
            raise FloatingPointError(
                f"non-finite loss {float(m['loss'])} at step {step - len(fetched) + 1 + i}")
        values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        window = []
        r = rate.update(step)
        writers.log_line(step, total, values, r)
        writer.scalars(step, {**{f"train/{k}": v for k, v in values.items()},
                              "train/images_per_sec": r["images_per_sec"]})
        if history:
          history.write(json.dumps({"step": step, **values}) + "\n")
          history.flush()
      if validate and (step % config.eval.every == 0 or last):
        validate(step, state)
      if step % config.train.checkpoint_every == 0 or last or preemption.requested:
        ckpt.save(step, state_to_checkpoint(state), force=True)
      if preemption.requested:
        break
  finally:
    preemption.restore()
    ckpt.close()
    if validate:
      validate.close()
    writer.close()
    if history:
      history.close()
  return state
