"""orbax CheckpointManager wrapper: asynchronous saves, keep the last N, restore onto any mesh."""
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True,
               best: str | None = None):
    """best: keep the `keep` checkpoints with the highest value of this metric instead of the
    latest ones (save() must then be given `metrics`)."""
    self.directory = epath.Path(directory)
    if not str(directory).startswith("gs://"):
      self.directory = self.directory.absolute()  # orbax wants absolute local paths
    best_fn = (lambda m: m[best]) if best else None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save, best_fn=best_fn,
        best_mode="max")
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, *, force: bool = False, metrics=None) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                             force=force, metrics=metrics)

  def restore(self, target, step: int | None = None):
    """Restores into the structure, dtypes and shardings of `target` (arrays or
    ShapeDtypeStructs): a checkpoint written on one mesh restores onto another."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"]

  def restore_raw(self, step: int | None = None) -> dict:
    """The saved tree as host arrays, without a target (for reading parts of another run)."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
