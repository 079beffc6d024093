"""orbax CheckpointManager wrapper: asynchronous saves, keep the last N, restore onto any mesh.

Restoring is forgiving but never silent: a newest step that cannot be read (a file cut short, a
crash while saving) is reported in one warning line and the newest readable step is used; nothing
is ever deleted. A checkpoint whose array shapes do not match the structure being restored
raises CheckpointMismatch naming the arrays (and, with a config, the config keys that differ from
the run's config.json).
"""
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from fdeblur import errors


class CheckpointMismatch(errors.CheckpointError):
  """The checkpoint's arrays have other shapes (or names) than the model being restored."""


class Checkpointer:

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True,
               best: str | None = None, create: bool = True):
    """best: keep the `keep` checkpoints with the highest value of this metric instead of the
    latest ones (save() must then be given `metrics`). create=False: a missing directory is
    not created (reading only)."""
    self.directory = epath.Path(directory)
    if not str(directory).startswith("gs://"):
      self.directory = self.directory.absolute()  # orbax wants absolute local paths
    best_fn = (lambda m: m[best]) if best else None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, enable_async_checkpointing=async_save, best_fn=best_fn,
        best_mode="max")
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, *, force: bool = False, metrics=None) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                             force=force, metrics=metrics)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, target, step: int | None = None, config=None):
    """Restores into the structure, dtypes and shardings of `target` (arrays or
    ShapeDtypeStructs): a checkpoint written on one mesh restores onto another. Without `step`,
    the newest step that can be read (unreadable newer ones are reported, see
    `unreadable_steps`). `config`: named in a CheckpointMismatch by its keys that differ from
    the workdir's config.json."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise errors.CheckpointError(f"no checkpoint in {self.directory}")
    self.unreadable_steps = []
    for s in steps:
      try:
        self._check_shapes(s, abstract, config)
        restored = self.manager.restore(
            s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # orbax/tensorstore raise many types (ValueError, OSError, XlaRuntimeError, ...) for a
        # damaged step; any of them means "use an older step".
        reason = _first_line(e)
        self.unreadable_steps.append((s, reason))
        if step is not None:
          raise errors.CheckpointError(
              f"checkpoint step {s} in {self.directory} cannot be restored ({reason})") from None
        continue
      if self.unreadable_steps:
        bad = ", ".join(str(b) for b, _ in self.unreadable_steps)
        logging.warning("checkpoint step %s in %s cannot be restored (%s): using step %d "
                        "(nothing was deleted)", bad, self.directory,
                        self.unreadable_steps[0][1], s)
      self.restored_step = s
      return restored["state"]
    raise errors.CheckpointError(
        f"no checkpoint in {self.directory} can be restored (step "
        f"{', '.join(str(b) for b, _ in self.unreadable_steps)}: "
        f"{self.unreadable_steps[0][1]})")

  def set_aside(self, steps) -> str:
    """Moves unreadable step folders out of the way of new saves (to ../unreadable_checkpoints/,
    never deleting them); returns that folder."""
    aside = os.path.join(os.path.dirname(str(self.directory).rstrip("/")),
                         "unreadable_checkpoints")
    os.makedirs(aside, exist_ok=True)
    for s in steps:
      src = os.path.join(str(self.directory), str(s))
      dst = os.path.join(aside, str(s))
      k = 1
      while os.path.exists(dst):
        dst, k = os.path.join(aside, f"{s}.{k}"), k + 1
      shutil.move(src, dst)
    self.manager.reload()
    return aside

  def _check_shapes(self, step: int, abstract, config) -> None:
    saved = _shapes(self.manager.item_metadata(step)["state"])
    wanted = _shapes(abstract)
    diff = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if not diff:
      return
    k = next((k for k in diff if k.startswith("params/")), diff[0])
    what = (f"{k} is {saved[k]} there, {wanted[k]} here" if k in saved and k in wanted else
            f"{k} is only {'there' if k in saved else 'here'}")
    keys = config_changes(os.path.dirname(str(self.directory).rstrip("/")), config)
    hint = (f"config keys that differ from the run's config.json: {keys}" if keys else
            "it was written with another model config")
    raise CheckpointMismatch(
        f"checkpoint step {step} in {self.directory} does not match the config "
        f"({len(diff)} arrays differ, e.g. {what}); {hint}. Use the config it was trained "
        "with, or another --workdir")

  def restore_raw(self, step: int | None = None) -> dict:
    """The saved tree as host arrays, without a target (for reading parts of another run)."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _first_line(e: Exception) -> str:
  text = " ".join(str(e).split())
  if len(text) > 120:
    text = text[:117] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _shapes(tree) -> dict:
  """{'params/a/0/kernel': shape} of a tree of arrays, ShapeDtypeStructs or orbax metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, "shape"):
      key = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
                     for p in path)
      out[key] = tuple(leaf.shape)
  return out


def _flat(d, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(workdir: str, config) -> str:
  """'model.ngf (16 there, 8 here), ...': the keys of `config` that differ from workdir's
  config.json ('' when there is no config or no config.json)."""
  path = os.path.join(workdir, "config.json")
  if config is None or not os.path.isfile(path):
    return ""
  try:
    with open(path) as f:
      saved = _flat(json.load(f))
  except (OSError, ValueError):
    return ""
  now = _flat(json.loads(config.to_json_best_effort()))
  norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
  keys = sorted((k for k in set(saved) | set(now) if norm(saved.get(k)) != norm(now.get(k))),
                key=lambda k: (k not in saved or k not in now,  # schema changes last
                               not k.startswith("model."), k))  # shapes come from config.model
  return ", ".join(f"{k} ({saved.get(k, 'absent')!r} there, {now.get(k, 'absent')!r} here)"
                   for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
