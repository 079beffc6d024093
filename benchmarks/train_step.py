"""Train-step throughput of every config: images/s and step time of the compiled, data-parallel
train step (`fdeblur.train.Setup.step`: on-device blur + forward + backward + optimiser update(s)),
and on accelerators the model FLOPs utilisation.

    python -m benchmarks.train_step [--full] [--configs quickstart,fan_luo:wgan_gp,tiny]
        [--steps 5] [--batch_size N]

Default: the quickstart config and every config's `tiny` variant (CPU-sized). --full: the configs'
own (paper) sizes, for accelerators. Batches are random uint8 images (or clips for the
frame-averaging configs) already on the devices: the number is the step alone, not the input
pipeline (benchmarks/input_pipeline.py). The mesh is every local device (`data` axis); the batch is
the config's global batch (rounded up to a multiple of the device count). Step time: median over
--steps calls after one warm-up call; compilation (lower + compile) is timed separately.

MFU = XLA's cost analysis of the compiled step (`compiled.cost_analysis()["flops"]`, per device
for the partitioned program) / step time / the device's peak dense bf16 FLOP/s (table PEAK_FLOPS,
by `device_kind`): "n/a" on CPU and on unknown devices. The configs compute in float32 unless
`--config model.dtype=bfloat16`-style overrides are given (MFU against the bf16 peak, as usual).
Configs with a perceptual loss use random VGG19 weights (same FLOPs as real ones).
"""
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

# Peak dense bf16 FLOP/s per device (one chip; GPU: SXM parts unless named), from vendor specs.
# Matched as a case-insensitive substring of jax.Device.device_kind, longest first.
PEAK_FLOPS = {
    "TPU v2": 45e12,
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5": 459e12,  # v5p
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU7x": 2307e12,  # Ironwood
    "V100": 125e12,
    "A10G": 70e12,
    "A100": 312e12,
    "L4": 121e12,
    "L40S": 362e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
}

TINY = ["quickstart:tiny", "chrysos2017:tiny", "hourglass:tiny", "fan_luo:tiny",
        "fan_luo:lsgan,tiny", "fan_luo:wgan_gp,tiny", "chrysos2019:tiny"]
DEFAULT = ["quickstart"] + TINY
FULL = ["quickstart", "chrysos2017", "hourglass", "fan_luo", "fan_luo:lsgan", "fan_luo:wgan_gp",
        "chrysos2019"]


def peak_flops(device) -> float | None:
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):
    if name.lower() in kind:
      return PEAK_FLOPS[name]
  return None


def load_config(spec: str):
  """'NAME[:variant]' -> configs/NAME.py's get_config(variant) (`config_lib.load`)."""
  from fdeblur import config_lib  # noqa: PLC0415
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return config_lib.load(os.path.join(root, "configs", spec.partition(":")[0] + ".py") +
                         ":" + spec.partition(":")[2])


def synthetic_batch(config, batch_size: int, rng: np.random.Generator) -> dict:
  from fdeblur.degrade.averaging import middle_frame  # noqa: PLC0415
  size = config.dataset.image_size
  length = int(config.dataset.clip_length)
  if length > 1:
    frames = rng.integers(0, 256, (batch_size, length, size, size, 3), dtype=np.uint8)
    return {"frames": frames, "image": frames[:, middle_frame(length)]}
  return {"image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)}


def compile_step(setup, state, batch) -> tuple[float, float | None]:
  """(seconds to lower and compile the step, XLA's FLOPs of the compiled step or None). The
  compiled executable is cached: the first call afterwards does not compile again."""
  t = time.perf_counter()
  compiled = setup._step.lower(state, batch, setup.vgg).compile()  # noqa: SLF001
  seconds = time.perf_counter() - t
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return seconds, float(analysis["flops"])
  except Exception:  # noqa: BLE001  cost analysis is best effort (backend-dependent)
    return seconds, None


def bench(spec: str, steps: int, batch_size: int | None, overrides: list[str],
          xla_convolutions: bool = False) -> dict:
  from fdeblur import parallel, train  # noqa: PLC0415
  from fdeblur.models import layers  # noqa: PLC0415
  config = load_config(spec)
  for item in overrides:
    key, _, value = item.partition("=")
    node = config
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], str) else value
  if config.loss.perceptual_weight > 0 and config.perceptual.weights != "random":
    config.perceptual.weights = "random"  # no VGG19 file needed; same FLOPs
  if "hourglass_checkpoint" in config.model:
    config.model.hourglass_checkpoint = ""
  mesh = parallel.make_mesh(())
  b = batch_size or config.train.batch_size
  b = -(-b // mesh.size) * mesh.size
  with layers.xla_convolutions() if xla_convolutions else contextlib.nullcontext():
    setup = train.Setup(config, mesh)
    state = setup.init_state()
  rng = np.random.default_rng(0)
  batches = [parallel.global_batch(synthetic_batch(config, b, rng), mesh) for _ in range(2)]
  compile_s, flops = compile_step(setup, state, batches[0])
  state, metrics = setup.step(state, batches[0])  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for i in range(steps):
    t = time.perf_counter()
    state, metrics = setup.step(state, batches[i % 2])
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  peak = peak_flops(jax.devices()[0])
  return {"config": spec, "size": config.dataset.image_size, "batch": b,
          "clip": int(config.dataset.clip_length), "compile_s": compile_s,
          "step_s": step_s, "images_per_s": b / step_s, "flops": flops,
          "mfu": (flops / step_s / peak) if (flops and peak) else None,
          "loss": float(metrics["loss"])}


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_bool("full", False, "The configs' own sizes (accelerators).")
  flags.DEFINE_string("configs", "", "Comma-separated NAME[:variant]; ';' between configs when a "
                      "variant list has commas (e.g. 'fan_luo:wgan_gp,tiny;quickstart').")
  flags.DEFINE_integer("steps", 5, "Timed steps per config.")
  flags.DEFINE_integer("batch_size", 0, "Global batch (0: the config's).")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE config override for every config, e.g. "
                            "model.dtype=bfloat16 (repeatable).")
  flags.DEFINE_bool("xla_convolutions", False, "Networks with XLA's own convolution ops (fdeblur "
                    "before the CPU formulations of models/layers.py), for a before/after figure.")


def main(argv):
  del argv
  args = flags.FLAGS
  if args.configs:
    sep = ";" if ";" in args.configs else ","
    specs = [s.strip() for s in args.configs.split(sep) if s.strip()]
  else:
    specs = FULL if args.full else DEFAULT
  dev = jax.devices()[0]
  peak = peak_flops(dev)
  print(f"jax {jax.__version__}, {jax.device_count()} x {dev.device_kind} ({dev.platform}), "
        f"peak {'%.0f TFLOP/s bf16' % (peak / 1e12) if peak else 'n/a'}, {os.cpu_count()} CPU "
        f"cores; random batches on device, median of {args.steps} steps")
  print("| config | image | batch (clip) | compile s | step ms | images/s | GFLOP/step | MFU |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
  for spec in specs:
    try:
      r = bench(spec, args.steps, args.batch_size or None, args.set, args.xla_convolutions)
    except Exception as e:  # noqa: BLE001  one broken config must not hide the others
      msg = " ".join(str(e).split())[:120]
      print(f"| `{spec}` | | | | | | | error: {type(e).__name__}: {msg} |", flush=True)
      continue
    clip = f" ({r['clip']})" if r["clip"] > 1 else ""
    gflops = f"{r['flops'] / 1e9:,.2f}" if r["flops"] else "n/a"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
    print(f"| `{spec}` | {r['size']}² | {r['batch']}{clip} | {r['compile_s']:.1f} | "
          f"{1e3 * r['step_s']:,.1f} | {r['images_per_s']:,.1f} | {gflops} | {mfu} |", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
