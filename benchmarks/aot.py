"""Compiler figures of every paper config's train step on TPU slices, compiled on this host
(no TPU): the largest per-chip batch that fits, per-chip memory, the roofline bound in images/s
per chip, compile time, collectives, and the blur synthesis' share of the step's FLOPs and bytes
with FFT and with direct convolution.

    python -m benchmarks.aot [--configs chrysos2017,hourglass] [--topologies v5e:4x4,v5p:4x4x2]
        [--compiles 3] [--out aot.jsonl]

Needs libtpu (the test extra). These are XLA's figures for the compiled program
(`fdeblur.aot`), not measured runs. Each (config, topology) is searched with at most --compiles
compiles of the step (`fdeblur.aot.fit`) in a process of its own (a compiler crash ends only its
row); results are appended to --out as JSON lines as they come, so a long run can be stopped and
read.
"""
import dataclasses
import json
import multiprocessing
import os
import queue as queue_lib
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks.train_step import load_config  # noqa: E402

PAPER = ["chrysos2017", "fan_luo", "chrysos2019", "hourglass", "fan_luo:wgan_gp", "fan_luo:lsgan"]
TOPOLOGIES = ["v5e:4x4", "v5p:4x4x2", "v6e:16x16"]


def measure(spec: str, topology: str, compiles: int, start: int, log) -> dict:
  from fdeblur import aot  # noqa: PLC0415
  config = load_config(spec)
  devices = aot.target_devices(topology)
  if compiles > 1:
    best, r, tried = aot.fit(config, devices, start=start, max_compiles=compiles, log=log)
    estimated = False
  else:  # one compile: the largest batch estimated from it (temporaries ∝ batch)
    r = aot.compile_step(config, devices, start * len(devices))
    log(f"  per-chip batch {start}: {r.memory_bytes / aot.GiB:.2f} GiB, compiled in "
        f"{r.compile_s:.0f} s")
    tried, best, estimated = {start: r}, aot.estimate_fit(r), True
  out = {"config": spec, "topology": topology, "chips": len(devices),
         "size": config.dataset.image_size, "per_chip_batch": best, "estimated": estimated,
         "tried": {b: [t.memory_bytes, bool(t.fits), round(t.compile_s, 1)]
                   for b, t in tried.items()}}
  if r is None or not best:
    return out
  out.update({k: v for k, v in dataclasses.asdict(r).items() if k not in ("hlo", "chip")})
  out.update(memory_bytes=r.memory_bytes, hbm_bytes=r.chip.hbm_bytes, roofline_s=r.roofline_s,
             images_per_s_per_chip=r.per_chip_batch / r.roofline_s)
  for method in ("fft", "direct"):
    b = aot.compile_blur(config, devices, r.global_batch, method)
    out[f"blur_{method}"] = {"flops": b.flops, "bytes": b.bytes_accessed,
                             "flops_share": b.flops / r.flops,
                             "bytes_share": b.bytes_accessed / r.bytes_accessed,
                             "compile_s": b.compile_s}
  return out


def _child(results, fn, args):
  try:
    results.put(("ok", fn(*args)))
  except Exception as e:  # noqa: BLE001  reported as the row's error
    results.put(("error", f"{type(e).__name__}: {' '.join(str(e).split())[:150]}"))


def isolated(fn, *args) -> tuple[str, object]:
  """fn(*args) in a fresh (spawned) process: ("ok", result) or ("error", message). A crash of
  the compiler takes only that process (libtpu 0.0.42.1 segfaults compiling train steps for
  v6e), and the message names the signal."""
  ctx = multiprocessing.get_context("spawn")
  results = ctx.Queue()
  proc = ctx.Process(target=_child, args=(results, fn, args))
  proc.start()
  try:
    while True:
      try:
        return results.get(timeout=5)
      except queue_lib.Empty:
        if proc.is_alive():
          continue
        try:  # it may have put its result just before exiting
          return results.get(timeout=1)
        except queue_lib.Empty:
          code = proc.exitcode
          why = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                 else f"exit code {code}")
          return "error", f"the compiling process died ({why})"
  finally:
    proc.join()


def _measure_logged(spec, topology, compiles, start):
  return measure(spec, topology, compiles, start,
                 lambda msg: print(msg, file=sys.stderr, flush=True))


def row(m: dict) -> str:
  gib = 1024**3
  if not m.get("per_chip_batch"):
    return f"| `{m['config']}` | {m['size']}² | {m['topology']} | does not fit at 1 | | | | |"
  coll = ", ".join(f"{op} ×{v['count']}" for op, v in sorted(m["collectives"].items()))
  fit = (f"~{m['per_chip_batch']} (compiled at {m['global_batch'] // m['chips']})"
         if m.get("estimated") else str(m["per_chip_batch"]))
  blur = " / ".join(f"{100 * m[f'blur_{k}']['flops_share']:.1f} % · "
                    f"{100 * m[f'blur_{k}']['bytes_share']:.1f} %" for k in ("fft", "direct"))
  return (f"| `{m['config']}` | {m['size']}² | {m['topology']} ({m['chips']} chips) | "
          f"{fit} | {m['memory_bytes'] / gib:.1f} / {m['hbm_bytes'] / gib:.0f} GiB | "
          f"{m['images_per_s_per_chip']:,.0f} | {m['compile_s']:.0f} s | {coll} | {blur} |")


HEADER = ("| config | image | slice | largest per-chip batch | memory / HBM per chip (at the batch "
          "compiled) | roofline images/s/chip "
          "| compile | collectives | blur share FLOPs · bytes: FFT / direct |\n"
          "|---|---:|---|---:|---:|---:|---:|---|---|")


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_string("configs", ",".join(PAPER), "';'-separated NAME[:variant] (',' when no "
                      "variant has a comma).")
  flags.DEFINE_string("topologies", ",".join(TOPOLOGIES), "Comma-separated TPU slices.")
  flags.DEFINE_integer("compiles", 3, "Step compiles per search at most; 1: compile at --start "
                       "only and estimate the largest batch (temporaries ∝ batch).")
  flags.DEFINE_integer("start", 4, "First per-chip batch tried.")
  flags.DEFINE_string("out", "", "Append each result as a JSON line to this file.")


def main(argv):
  del argv
  args = flags.FLAGS
  sep = ";" if ";" in args.configs else ","
  specs = [s for s in args.configs.split(sep) if s]
  print("Compiler figures (XLA:TPU via libtpu on this CPU host), not measured runs.")
  print(HEADER, flush=True)
  for topology in args.topologies.split(","):
    for spec in specs:  # each in its own process: one broken config must not hide the others
      status, m = isolated(_measure_logged, spec, topology, args.compiles, args.start)
      if status != "ok":
        print(f"| `{spec}` | | {topology} | error: {m} |", flush=True)
        continue
      if args.out:
        with open(args.out, "a") as f:
          f.write(json.dumps(m) + "\n")
      print(row(m), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
