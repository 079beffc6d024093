"""Evaluation protocols (`config.eval.protocols`, comma-separated; "" = the defaults below):

  training      config.blur as it is (the training mixture)
  gaussian, motion, trajectory   one kernel family only (config.blur's ranges)
  pravg7 ... pravgL              PrAvg(L) frame averaging (clip datasets only)
  vla                            variable-length averaging (clip datasets only)

Defaults: training, gaussian, motion, (trajectory when the config trains on it), and for clip
datasets PrAvg(L) for L in config.blur.pravg_lengths (the paper's 7, 9, 11, 15, 21) that fit in
the clip, and vla. Every protocol blurs example i with the key fold_in(PRNGKey(blur_seed), i)
(`inference.blur_test_set`).
"""
import copy

import ml_collections


def clip_length(config) -> int:
  return int(config.dataset.clip_length)


def protocols(config) -> list[str]:
  """The protocols of this evaluation, in report order."""
  value = config.eval.protocols
  if isinstance(value, str):
    names = [p.strip() for p in value.split(",") if p.strip()]
  else:
    names = [str(p) for p in value]
  clips = clip_length(config) > 1
  if not names:
    names = ["training", "gaussian", "motion"]
    if config.blur.trajectory_prob > 0:
      names.append("trajectory")
    if clips:
      lengths = tuple(config.blur.pravg_lengths)
      names += [f"pravg{n}" for n in lengths if n <= clip_length(config)] + ["vla"]
  for name in names:
    if name not in ("training", "gaussian", "motion", "trajectory", "vla") and not (
        name.startswith("pravg") and name[5:].isdigit()):
      raise ValueError(f"unknown evaluation protocol {name!r} (training, gaussian, motion, "
                       "trajectory, pravgL, vla)")
    if (name == "vla" or name.startswith("pravg")) and not clips:
      raise ValueError(f"protocol {name!r} averages video frames: it needs a clip dataset "
                       "(config.dataset.clip_length > 1)")
    if name.startswith("pravg") and int(name[5:]) > clip_length(config):
      raise ValueError(f"protocol {name!r} needs clips of at least {name[5:]} frames "
                       f"(config.dataset.clip_length = {clip_length(config)})")
  return names


def protocol_blur(config, name: str) -> ml_collections.ConfigDict:
  """config.blur with every sample drawn from protocol `name`."""
  blur = copy.deepcopy(config.blur)
  if name == "training":
    return blur
  for key in ("gaussian_prob", "motion_prob", "trajectory_prob", "pravg_prob", "vla_prob"):
    setattr(blur, key, 0.0)
  if name.startswith("pravg"):
    blur.pravg_prob = 1.0
    blur.pravg_lengths = (int(name[5:]),)
  else:
    setattr(blur, f"{name}_prob", 1.0)
  return blur


def describe(config, name: str) -> str:
  b = config.blur
  if name == "training":
    return "the training mixture (config.blur)"
  if name == "gaussian":
    return f"Gaussian kernels, sigma {tuple(b.gaussian_sigma)} px, support {b.kernel_size}"
  if name == "motion":
    return f"linear motion kernels, length {tuple(b.motion_length)} px"
  if name == "trajectory":
    return (f"camera-shake trajectories (Boracchi & Foi), path {b.trajectory_max_len} px, "
            f"canvas {b.trajectory_canvas}")
  if name == "vla":
    return f"variable-length frame averaging, L in {tuple(b.vla_length)}"
  return f"PrAvg({name[5:]}): average of {name[5:]} consecutive frames"
