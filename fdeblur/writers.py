"""Metric output: a stdout line per log step and TensorBoard event files (tensorboardX, no TF)."""
import json
import os
import time

import numpy as np
from absl import logging
from tensorboardX import SummaryWriter


class MetricWriter:

  def __init__(self, logdir: str, *, enabled: bool = True):
    # Only process 0 writes in multi-host runs.
    self._tb = SummaryWriter(logdir) if enabled else None

  def scalars(self, step: int, values: dict):
    if self._tb:
      for k, v in values.items():
        self._tb.add_scalar(k, float(v), step)

  def image(self, step: int, tag: str, image: np.ndarray):
    """image: [H, W, 3] float in [0, 1]."""
    if self._tb:
      self._tb.add_image(tag, np.clip(image, 0, 1), step, dataformats="HWC")

  def close(self):
    if self._tb:
      self._tb.close()


class Throughput:
  """Images/s and ETA between successive log steps."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total, self.batch = total_steps, batch_size
    self.last_step, self.last_time = start_step, time.perf_counter()

  def update(self, step: int) -> dict:
    now = time.perf_counter()
    sec_per_step = (now - self.last_time) / max(1, step - self.last_step)
    self.last_step, self.last_time = step, now
    return {"images_per_sec": self.batch / sec_per_step,
            "eta_sec": sec_per_step * max(0, self.total - step)}


def log_line(step: int, total: int, metrics: dict, rate: dict):
  parts = [f"step {step}/{total}"]
  parts += [f"{k} {v:.4f}" for k, v in sorted(metrics.items())]
  parts.append(f"{rate['images_per_sec']:.1f} img/s")
  eta = int(rate["eta_sec"])
  parts.append(f"ETA {eta // 3600:d}:{eta % 3600 // 60:02d}:{eta % 60:02d}")
  logging.info(" | ".join(parts))


def resume_history(path: str, step: int) -> list[dict]:
  """The entries of the history file (train_log.jsonl) up to `step`, the step training resumes
  from; later entries (logged by a run that stopped before its next checkpoint, to be logged
  again) are removed from the file, so that it holds one line per logged step (the last one
  written, for a step listed twice by an older version). Unparseable lines (cut by a crash) are
  dropped."""
  if not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      try:
        entry = json.loads(line)
      except ValueError:
        continue
      if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
        by_step[entry["step"]] = entry
  kept = [by_step[s] for s in sorted(by_step)]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(e) + "\n" for e in kept)
  os.replace(tmp, path)
  return kept
