"""Inference throughput of the eval-mode generator (quickstart's model: the DeblurGAN-style
generator at ngf 16, 6 blocks): images/s at 64², 128² and 256², measured side by side in one run:

- jit f32: `Networks.apply_eval` (the jit-compiled path evaluation and `fdeblur` inference use);
- eager f32: the same `Networks.apply(..., train=False)` without jit (op-by-op dispatch);
- jit bf16: the same model built with `model.dtype=bfloat16` (parameters stay float32).

    python -m benchmarks.inference [--full] [--sizes 64,128,256] [--batch 8] [--config quickstart]

Ratios: jit/eager and bf16/f32 (both jit). GFLOP/image from XLA's cost analysis of the compiled
f32 forward; MFU (f32 and bf16 jit) against the device's peak bf16 FLOP/s on accelerators, n/a on
CPU. Timings: median of repeated calls after a warm-up call (compilation excluded); --full uses a
larger batch and more repetitions. Weights are the config's random initialisation: throughput does
not depend on them.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.train_step import load_config, peak_flops  # noqa: E402


def _time(fn, min_time: float, max_reps: int, min_reps: int = 2) -> float:
  jax.block_until_ready(fn())  # warm-up (compilation)
  times, start = [], time.perf_counter()
  while len(times) < min_reps or (time.perf_counter() - start < min_time and
                                  len(times) < max_reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _flops(fn, *args) -> float | None:
  try:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return float(analysis["flops"])
  except Exception:  # noqa: BLE001  best effort
    return None


def generator(spec: str, dtype: str):
  from fdeblur import networks  # noqa: PLC0415
  config = load_config(spec)
  config.model.dtype = dtype
  return networks.Networks.generator(config)


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_string("config", "quickstart", "NAME[:variant] whose generator to run.")
  flags.DEFINE_string("sizes", "64,128,256", "Comma-separated image sizes.")
  flags.DEFINE_integer("batch", 0, "Images per call (0: 4; with --full 32).")
  flags.DEFINE_bool("full", False, "Bigger batch, longer timings.")
  flags.DEFINE_bool("no_eager", False, "Skip the un-jitted column.")


def main(argv):
  del argv
  args = flags.FLAGS
  batch = args.batch or (32 if args.full else 4)
  min_time, max_reps = (2.0, 50) if args.full else (0.3, 5)
  sizes = [int(s) for s in args.sizes.split(",")]
  dev = jax.devices()[0]
  peak = peak_flops(dev)
  f32, bf16 = generator(args.config, "float32"), generator(args.config, "bfloat16")
  print(f"`{args.config}` generator, eval mode, batch {batch}; jax {jax.__version__} on "
        f"{dev.device_kind} ({dev.platform}), {os.cpu_count()} CPU cores")
  print("| image | jit f32 img/s | eager f32 img/s | jit / eager | jit bf16 img/s | bf16 / f32 |"
        " GFLOP/image | MFU f32 | MFU bf16 |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
  rng = np.random.default_rng(0)
  for size in sizes:
    x = jnp.asarray(rng.uniform(size=(batch, size, size, 3)).astype(np.float32))
    t_jit = _time(lambda: f32.apply_eval(f32.params, f32.model_state, x), min_time, max_reps)
    if args.no_eager:
      t_eager = None
    else:
      t_eager = _time(lambda: f32.apply(f32.params, f32.model_state, x, train=False)[0],
                      min_time, max_reps)
    t_bf16 = _time(lambda: bf16.apply_eval(bf16.params, bf16.model_state, x), min_time, max_reps)
    flops = _flops(lambda p, s, i: f32.apply(p, s, i, train=False)[0], f32.params,
                   f32.model_state, x)

    def mfu(t):
      return f"{100 * flops / t / peak:.1f}%" if (flops and peak) else "n/a"

    eager = f"{batch / t_eager:,.1f}" if t_eager else "—"
    ratio = f"{t_eager / t_jit:,.1f}x" if t_eager else "—"
    gflop = f"{flops / batch / 1e9:,.3f}" if flops else "n/a"
    print(f"| {size}² | {batch / t_jit:,.1f} | {eager} | {ratio} | {batch / t_bf16:,.1f} | "
          f"{t_jit / t_bf16:.2f}x | {gflop} | {mfu(t_jit)} | {mfu(t_bf16)} |", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
