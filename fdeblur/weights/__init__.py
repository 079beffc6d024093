"""Weights that ship with the package, as compact files: `NAME/config.json` (the training config)
and `NAME/params.msgpack` (the generator's inference weights — the EMA when training kept one —
and its other variables, flax msgpack). No optimiser state: a few MB instead of an orbax
checkpoint's full train state.

  python -m fdeblur.weights --workdir=WORKDIR [--out=fdeblur/weights/face_model]

(`exporter.py`). `python -m fdeblur.deblur` loads `DEFAULT` when no --checkpoint is given;
training reads such a folder with config.train.init_from (`read`).
"""
import os

import numpy as np

DEFAULT_NAME = "face_model"
DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_NAME)
CONFIG_FILE, PARAMS_FILE = "config.json", "params.msgpack"


def is_exported(path: str) -> bool:
  return os.path.isfile(os.path.join(path, PARAMS_FILE))


class Weights:
  """What inference needs from a state: `params` (used as-is), `model_state`; no EMA."""

  def __init__(self, params: dict, model_state: dict):
    self.params, self.model_state, self.ema_params = params, model_state, {}


def _require_exported(path: str) -> None:
  if not is_exported(path):
    raise FileNotFoundError(f"{path}: no {PARAMS_FILE} (export one with `python -m "
                            "fdeblur.weights --workdir=WORKDIR --out=DIR`)")


def load(path: str = DEFAULT):
  """(config, generator Networks, Weights) of an exported model folder. Raises
  FileNotFoundError naming the folder, errors.CheckpointError when the weights do not fit the
  config."""
  import jax  # pylint: disable=import-outside-toplevel
  from fdeblur import config_lib, networks  # pylint: disable=import-outside-toplevel
  _require_exported(path)
  config = config_lib.from_workdir(path)
  nets = networks.Networks.generator(config)
  params, model_state = read(path, nets.params, nets.model_state)
  return config, nets, Weights(jax.tree.map(np.asarray, params), model_state)


def resolve(path: str) -> str:
  """"default" -> the shipped model's folder; any other path as given."""
  return DEFAULT if path == "default" else path


def read(path: str, params, model_state, grow: bool = False) -> tuple[dict, dict]:
  """The (params, model_state) of an exported folder as NumPy trees shaped like the given ones
  (a network's variables): FileNotFoundError naming the folder, errors.CheckpointError naming
  the first variable that does not fit. grow: a stored array smaller than its variable fills
  the variable's leading slice (`widen`), the rest keeps the given values."""
  from flax import serialization  # pylint: disable=import-outside-toplevel
  _require_exported(path)
  with open(os.path.join(path, PARAMS_FILE), "rb") as f:
    raw = serialization.msgpack_restore(f.read())
  return (_like(params, raw["params"], f"{path}/params", grow),
          _like(model_state, raw.get("model_state", {}), f"{path}/model_state", grow))


def _mismatch(message: str) -> Exception:
  from fdeblur import errors  # pylint: disable=import-outside-toplevel
  return errors.CheckpointError(message)


def widen(init, old):
  """A wider network's variable from a narrower one's, so that the network computes what the
  narrow one did: `old` fills the leading slice of `init` (the fresh variable); in a kernel
  (rank >= 2, inputs on axis -2, as flax's Dense/Conv/ConvTranspose) the new input channels get
  zero weights, so the new features (computed from the old ones with their fresh weights) feed
  nothing until training moves those weights. Exact for networks that mix channels only through
  such kernels and per-channel norms (the DeblurGAN generator); not for channel concatenations
  or pixel shuffles, whose channel order changes with width."""
  init, old = np.asarray(init), np.asarray(old)
  new = np.array(init, dtype=init.dtype)
  if init.ndim >= 2:
    new[..., old.shape[-2]:, :] = 0
  new[tuple(slice(0, n) for n in old.shape)] = old
  return new


def _like(target, loaded, where, grow: bool = False):
  """`loaded` in the structure of `target` (msgpack turns integer keys into strings), checked;
  grow: smaller arrays are widened into the target's (`widen`)."""
  if isinstance(target, dict):
    if not isinstance(loaded, dict) or len(loaded) != len(target):
      raise _mismatch(f"{where}: the weights do not match the network (different variables)")
    return {k: _like(v, loaded.get(k, loaded.get(str(k))), f"{where}/{k}", grow)
            for k, v in target.items()}
  if (grow and loaded is not None and np.ndim(loaded) == np.ndim(target)
      and all(a <= b for a, b in zip(np.shape(loaded), np.shape(target)))):
    return widen(target, loaded)
  if loaded is None or np.shape(loaded) != np.shape(target):
    raise _mismatch(f"{where}: the weights do not match the network "
                     f"(shape {np.shape(loaded)} vs {np.shape(target)})")
  return np.asarray(loaded, np.asarray(target).dtype)
