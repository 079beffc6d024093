"""Seconds to trace and lower each config's train step (Python: JAX tracing + MLIR, before XLA
compiles it), with the batch norms storing their running statistics as flax's nnx.BatchNorm does
(`self.mean[...] = ...`) and as fdeblur's layers.BatchNorm does (`set_value`), side by side in
one process, alternating, so both see the same load.

    python -m benchmarks.trace_time [--configs hourglass:tiny,chrysos2019:tiny,hourglass]
        [--repeats 2]

Why: on a traced value, nnx's indexed store asks for the tracer's `sharding`, and the error
message behind that AttributeError walks the whole trace so far (flax 0.12.8, jax 0.10.2); once
per statistic, so tracing grows quadratically with the number of batch norms. Everything is
abstract (`fdeblur.aot`: no weights, no device memory), so paper-sized configs run on a CPU. The
outputs of the two are the same numbers (tests/test_layers.py).
"""
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.train_step import load_config  # noqa: E402

CONFIGS = "hourglass:tiny,chrysos2019:tiny,chrysos2017:tiny,hourglass,chrysos2017"


def define_flags():
  flags.DEFINE_list("configs", CONFIGS.split(","), "Configs as NAME[:VARIANT] (configs/NAME.py).")
  flags.DEFINE_integer("repeats", 2, "Rounds per row (median).")


@contextlib.contextmanager
def stock_batch_norm():
  """layers.BatchNorm with nnx.BatchNorm's own training branch (its indexed stores)."""
  from fdeblur.models import layers  # noqa: PLC0415
  ours = layers.BatchNorm._train_call  # noqa: SLF001
  layers.BatchNorm._train_call = (  # noqa: SLF001
      lambda self, x, mask: nnx.BatchNorm.__call__(self, x, False, mask=mask))
  try:
    yield
  finally:
    layers.BatchNorm._train_call = ours  # noqa: SLF001


def lower_seconds(config) -> float:
  """Seconds to trace and lower `config`'s train step for this process's devices (a fresh
  Setup, hence a fresh jit cache, each time)."""
  import numpy as np  # noqa: PLC0415
  import jax  # noqa: PLC0415
  from fdeblur import aot, parallel  # noqa: PLC0415
  mesh = parallel.make_mesh(config.mesh_shape, devices=np.asarray(jax.devices()))
  setup = aot.setup_for(config, mesh)
  state = aot.abstract_state(setup)
  batch = aot.abstract_batch(config, config.train.batch_size, mesh)
  t = time.perf_counter()
  setup._step.lower(state, batch, setup.vgg)  # noqa: SLF001
  return time.perf_counter() - t


def count_batch_norms(config) -> int:
  """Batch norms of the networks the step trains (generator, and discriminator if any)."""
  from fdeblur import models  # noqa: PLC0415
  from fdeblur.models import layers  # noqa: PLC0415
  nets = [nnx.eval_shape(lambda: models.create_training(config.model, nnx.Rngs(0)))]
  if config.discriminator.name:
    nets.append(nnx.eval_shape(
        lambda: models.create_discriminator(config.discriminator, nnx.Rngs(0))))
  return sum(isinstance(m, layers.BatchNorm) for net in nets for _, m in nnx.iter_modules(net))


def main(argv):
  del argv
  fv = flags.FLAGS
  print("| config | image | batch norms | trace + lower, nnx's stores (s) | "
        "layers.BatchNorm (s) | ratio |")
  print("|---|---|---|---|---|---|")
  for spec in fv.configs:
    config = load_config(spec)
    stock, ours = [], []
    for _ in range(fv.repeats):
      with stock_batch_norm():
        stock.append(lower_seconds(config))
      ours.append(lower_seconds(config))
    s, o = statistics.median(stock), statistics.median(ours)
    print(f"| `{spec}` | {config.dataset.image_size}² | {count_batch_norms(config)} | {s:.2f} | "
          f"{o:.2f} | {s / o:.2f}× |", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
