"""Training: the jit-compiled data-parallel step and the loop with checkpoints, logging,
validation and preemption handling. The state and its restoring are `fdeblur.state`; the
validation scoring is `fdeblur.inference`."""
import json
import os
import signal

import jax
import ml_collections
import numpy as np
from absl import logging

from fdeblur import checkpoints, divergence, errors, inference, objectives, parallel, writers
from fdeblur import state as state_lib
from fdeblur.state import TrainState
from input_pipeline import pipeline


class Setup(state_lib.Trainable):
  """Everything a config trains (networks, optimisers: `state.Trainable`), the compiled step on
  `mesh` and the VGG weights of the perceptual loss."""

  def __init__(self, config, mesh, g_tx=None, abstract: bool = False):
    """abstract: networks, VGG weights and `init_state()` are jax.ShapeDtypeStruct trees and
    nothing touches a device, so the step can be lowered for devices this process cannot hold
    data on (a TPU topology compiled on a CPU host: fdeblur.aot)."""
    super().__init__(config, g_tx, abstract)
    self.mesh = mesh
    self.vgg = objectives.perceptual_params(config, abstract)
    if self.vgg is not None:
      self.vgg = jax.tree.map(_placer(parallel.replicated(mesh), abstract), self.vgg)
    self._step = objectives.make_step(config, self.g, self.d, self.g_tx, self.d_tx, mesh)

  def step(self, state, batch):
    """One training step on a global batch dict ({"image": ...} or a clip batch)."""
    return self._step(state, batch, self.vgg)


def _placer(sharding, abstract: bool):
  """x -> x on `sharding`: a jax.ShapeDtypeStruct carrying it when abstract, else device_put."""
  if abstract:
    return lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return lambda x: jax.device_put(x, sharding)


def _preemption_service() -> bool:
  """Whether JAX's distributed preemption service runs (jax.distributed.initialize with
  jax_enable_preemption_service, the default): its notifier then catches SIGTERM itself."""
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return getattr(distributed.global_state, "preemption_sync_manager", None) is not None


class Preemption:
  """SIGTERM (preemption) asks the loop to checkpoint and stop. `reached(step)` must be called
  at every step by every process. Under jax.distributed the signal goes to JAX's preemption
  notifier and orbax's `CheckpointManager.reached_preemption(step)` becomes true at the SAME
  step in every process (the coordination service agrees on it), so all processes save that
  step and stop, and none is left waiting in a collective. In a single process without the
  service, a SIGTERM handler sets the flag for the next step."""

  def __init__(self, ckpt: checkpoints.Checkpointer):
    self.ckpt, self.requested = ckpt, False
    self.synced = _preemption_service()
    self._previous = None if self.synced else signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True

  def reached(self, step: int) -> bool:
    if self.synced and not self.requested and self.ckpt.manager.reached_preemption(step):
      logging.warning("Preemption: every process saves step %d and stops", step)
      self.requested = True
    return self.requested

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class MetricWindow:
  """The step metrics since the last log line, kept on the device until needed. `check()`
  fetches them and raises errors.Diverged (a FloatingPointError) naming the first step with a
  non-finite loss, or the step where `monitor` (divergence.Monitor) finds the run diverged; it
  runs before every save, so no checkpoint holds a state that came from a NaN step."""

  def __init__(self, monitor: divergence.Monitor | None = None):
    self._pending, self._fetched = [], []  # [(step, device metrics)], [(step, host metrics)]
    self.monitor = monitor

  def append(self, step: int, metrics: dict):
    self._pending.append((step, metrics))

  def check(self):
    if not self._pending:
      return
    fetched = jax.device_get([m for _, m in self._pending])
    steps = [s for s, _ in self._pending]
    self._pending = []
    for step, m in zip(steps, fetched):
      if not np.isfinite(m["loss"]):
        raise errors.Diverged(f"non-finite loss {float(m['loss'])} at step {step}: lower "
                              "config.train.learning_rate")
      if self.monitor is not None:
        self.monitor.check(step, m)
      self._fetched.append((step, m))

  def summary(self) -> dict:
    """Means over the window (checked), which then starts afresh."""
    self.check()
    fetched = [m for _, m in self._fetched]
    self._fetched = []
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


class _Validation:
  """Validation PSNR/SSIM on a fixed subset of the test split with the evaluation blur; keeps
  the best checkpoint by PSNR in workdir/best/ and logs an image grid."""

  def __init__(self, config, workdir, nets, writer):
    self.config, self.nets, self.writer = config, nets, writer
    n = config.eval.num_validation
    self.images = pipeline.eval_examples(config.dataset)["image"][:n]
    self.best = checkpoints.Checkpointer(os.path.join(workdir, "best"), keep=1, best="psnr")

  def __call__(self, step, state):
    predict = inference.Predictor(self.nets, state, self.config.eval.batch_size)
    blurry, deblurred, m = inference.score(self.config, predict, self.images)
    values = {k: float(np.mean(v)) for k, v in m.items()}
    logging.info("validation at step %d: PSNR %.2f dB (blurred %.2f), SSIM %.4f", step,
                 values["psnr_deblurred"], values["psnr_blurred"], values["ssim_deblurred"])
    self.writer.scalars(step, {f"val/{k}": v for k, v in values.items()})
    rows = min(4, len(blurry))
    sharp = self.images[:rows].astype(np.float32) / 255.0
    grid = np.concatenate([np.concatenate([blurry[i], deblurred[i], sharp[i]], axis=1)
                           for i in range(rows)], axis=0)
    self.writer.image(step, "val/blurry_output_sharp", grid)
    self.best.save(step, state_lib.state_to_checkpoint(state),
                   metrics={"psnr": values["psnr_deblurred"]})
    return values

  def close(self):
    self.best.close()


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  mesh = parallel.make_mesh(config.mesh_shape)
  setup = Setup(config, mesh)
  ckpt = state_lib.checkpointer(config, workdir)
  state = state_lib.restore_or_init(setup, ckpt, mesh)
  unreadable = [s for s, _ in getattr(ckpt, "unreadable_steps", [])]
  if unreadable and jax.process_index() == 0 and not errors.is_remote(workdir):
    aside = ckpt.set_aside(unreadable)  # new saves would collide with them
    logging.warning("moved the unreadable checkpoint step(s) %s to %s (kept, not deleted)",
                    ", ".join(map(str, unreadable)), aside)
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
  history_path = os.path.join(workdir, "train_log.jsonl")
  monitor = divergence.Monitor(config.train, writers.resume_history(history_path, start)
                               if is_chief else [])
  history = open(history_path, "a") if is_chief else None
  validate = _Validation(config, workdir, setup.g, writer) if config.eval.every else None
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  rate = writers.Throughput(total, config.train.batch_size, start)
  preemption = Preemption(ckpt)
  logging.info("Training %s (%d parameters) on a %s mesh of %d devices, steps %d..%d",
               config.model.name, sum(x.size for x in jax.tree.leaves(state.params)),
               dict(mesh.shape), mesh.size, start, total)
  window = MetricWindow(monitor)
  try:
    for step in range(start + 1, total + 1):
      batch = parallel.global_batch(next(batches), mesh)
      state, step_metrics = setup.step(state, batch)
      window.append(step, step_metrics)
      last = step == total
      stop = preemption.reached(step)
      if step % config.train.log_every == 0 or last or stop:
        values = window.summary()
        r = rate.update(step)
        writers.log_line(step, total, values, r)
        writer.scalars(step, {**{f"train/{k}": v for k, v in values.items()},
                              "train/images_per_sec": r["images_per_sec"]})
        if history:
          history.write(json.dumps({"step": step, **values}) + "\n")
          history.flush()
      if validate and (step % config.eval.every == 0 or last):
        window.check()
        validate(step, state)
      if step % config.train.checkpoint_every == 0 or last or stop:
        window.check()
        ckpt.save(step, state_lib.state_to_checkpoint(state), force=True)
      if stop:
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
