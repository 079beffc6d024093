"""Divergence watch of the training loop.

A run has diverged when, for `config.train.divergence_patience` consecutive steps, its loss stays
above `divergence_factor` x its early value, or its gradient norm stays below
`divergence_grad_floor` x its early value (collapsed gradients: saturated outputs, dead units); a
non-finite loss diverges at once. The early values are the medians of the run's first
`divergence_warmup` steps (after a resume: the first entries of train_log.jsonl, so the
reference survives restarts). `config.train.divergence`: "stop" (raise errors.Diverged naming the
step; the last checkpoint is kept, the diverged state is not saved), "warn" (one warning per
kind, training goes on) or "off".
"""
import math

import numpy as np
from absl import logging

from fdeblur import errors

class Monitor:

  def __init__(self, train_cfg, history=()):
    """train_cfg: config.train; history: the train_log.jsonl entries of the steps done before
    this process started (a resume)."""
    self.action = str(train_cfg.divergence)
    if self.action not in ("stop", "warn", "off"):
      raise errors.UsageError(f"config.train.divergence={self.action!r}: use stop, warn or off")
    self.factor = float(train_cfg.divergence_factor)
    self.floor = float(train_cfg.divergence_grad_floor)
    self.warmup, self.patience = int(train_cfg.divergence_warmup), int(train_cfg.divergence_patience)
    history = sorted(history, key=lambda e: e.get("step", 0))
    # log entries are means over log_every steps: the first one when none is within warmup
    first = [e for e in history if e.get("step", 0) <= self.warmup] or history[:1]
    self.early = {k: [float(e[k]) for e in first if k in e] for k in ("loss", "grad_norm")}
    self.ready = bool(first)
    self.bad = {"loss": 0, "grad_norm": 0}
    self.warned = set()

  def _ref(self, key):
    values = [v for v in self.early[key] if math.isfinite(v)]
    return float(np.median(values)) if values else None

  def check(self, step: int, metrics: dict) -> None:
    """One step's host metrics (`loss`, `grad_norm`)."""
    if self.action == "off":
      return
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      self._fire("nonfinite", step, f"training diverged at step {step}: the loss is {loss}")
      return
    if not self.ready:
      for k in self.early:
        if k in metrics:
          self.early[k].append(float(metrics[k]))
      self.ready = len(self.early["loss"]) >= self.warmup
      return
    ref = self._ref("loss")
    self.bad["loss"] = self.bad["loss"] + 1 if ref is not None and loss > self.factor * abs(
        ref) else 0
    if self.bad["loss"] >= self.patience:
      self._fire("loss", step, f"training diverged at step {step}: the loss {loss:.4g} has been "
                 f"above {self.factor:g} x its early value {ref:.4g} for {self.patience} steps "
                 "(config.train.divergence_factor)")
    if "grad_norm" in metrics and self._ref("grad_norm"):
      g, ref_g = float(metrics["grad_norm"]), self._ref("grad_norm")
      self.bad["grad_norm"] = self.bad["grad_norm"] + 1 if g < self.floor * ref_g else 0
      if self.bad["grad_norm"] >= self.patience:
        self._fire("grad_norm", step, f"training diverged at step {step}: the gradients "
                   f"collapsed (norm {g:.3g}, below {self.floor:g} x its early value "
                   f"{ref_g:.3g} for {self.patience} steps; config.train.divergence_grad_floor)")

  def _fire(self, kind: str, step: int, message: str) -> None:
    hint = ("; lower config.train.learning_rate, or set config.train.divergence=warn to go "
            "on anyway")
    if self.action == "stop":
      raise errors.Diverged(message + hint)
    if kind not in self.warned:
      self.warned.add(kind)
      logging.warning("%s (config.train.divergence=warn: training goes on)", message)
