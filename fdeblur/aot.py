"""Ahead-of-time compilation of a config's train step for a TPU topology (or the local devices),
without touching a device: what a slice holds and how fast it could go, before renting it.

    python -m fdeblur.main --mode=compile --config=configs/NAME.py[:variant] \\
        [--topology=v5e:4x4] [--per_chip_batch=N] [--fit]

The step is the one training runs (`train.Setup(..., abstract=True).step`, the same jit-compiled
function): networks, optimiser state and VGG weights are built with `nnx.eval_shape` /
`jax.eval_shape`, the state and the batch are `jax.ShapeDtypeStruct`s carrying their
`NamedSharding`s (state replicated, batch split over the `data` axis), and
`step.lower(...).compile()` returns the XLA executable for the target. For a TPU topology the
devices come from `jax.experimental.topologies.get_topology_desc` (libtpu compiles on a CPU host;
a compile-only client cannot hold arrays, so nothing here creates one).

Figures are the compiler's, per chip: `memory_analysis()` (arguments, temporaries, outputs; the
donated state is aliased, so the total counts it once), `cost_analysis()` (FLOPs and bytes
accessed), collectives parsed from the compiled HLO. The roofline bound is
max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) with the chip figures of `CHIPS`: a lower bound
on the step time, not a measurement.
"""
import dataclasses
import math
import os
import re
import time

import jax
import numpy as np

from fdeblur import parallel


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_flops: float  # dense bf16 FLOP/s per chip
  hbm_bandwidth: float  # bytes/s per chip
  hbm_bytes: int  # per chip


GiB = 1024**3
# Per chip, from Google Cloud's TPU documentation (docs.cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e, checked 2026-12: "Peak compute per chip (bf16)", HBM capacity and bandwidth; capacities
# are nominal, XLA:TPU reserves a little, e.g. 15.75 of v5e's 16). Matched as a substring
# of jax.Device.device_kind, longest first.
CHIPS = {
    "TPU v4": Chip("v4", 275e12, 1228e9, 32 * GiB),
    "TPU v5 lite": Chip("v5e", 197e12, 819e9, 16 * GiB),
    "TPU v5": Chip("v5p", 459e12, 2765e9, 95 * GiB),
    "TPU v6 lite": Chip("v6e", 918e12, 1638e9, 32 * GiB),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
               "collective-broadcast")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# `%name = SHAPE op(` where op is a collective, sync or the start of an async pair.
_COLLECTIVE_LINE = re.compile(
    r"=\s*(?P<shape>.*?)\s(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]")


def chip(device) -> Chip | None:
  kind = device.device_kind.lower()
  for name in sorted(CHIPS, key=len, reverse=True):
    if name.lower() in kind:
      return CHIPS[name]
  return None


def target_devices(topology: str = "") -> list:
  """The devices of a TPU topology ("v5e:4x4", "v5p:2x2x2", ...) or, for "", the local ones."""
  if not topology:
    return jax.devices()
  from jax.experimental import topologies  # noqa: PLC0415
  # Compile-only: no TPU is opened, so other processes may use libtpu at the same time (without
  # this, a second process fails on /tmp/libtpu_lockfile). Read when libtpu first loads.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # noqa: BLE001  libtpu missing, or an unknown name
    raise ValueError(f"--topology={topology}: cannot describe this TPU topology "
                     f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); is libtpu "
                     "installed (pip install -e '.[test]')?") from e
  return list(desc.devices)


def _array_bytes(shape_text: str, op: str, start: bool) -> int:
  arrays = [(m["dtype"], m["dims"]) for m in _ARRAY.finditer(shape_text)
            if m["dtype"] in _DTYPE_BYTES]
  if start and op in ("all-gather", "collective-permute", "all-to-all") and len(arrays) > 1:
    arrays = arrays[len(arrays) // 2:]  # async start: (operands, results)
  return sum(_DTYPE_BYTES[d] * math.prod(int(n) for n in dims.split(",") if n)
             for d, dims in arrays)


def collectives(hlo_text: str) -> dict:
  """{op: {"count": n, "bytes": result bytes}} of the collectives in a compiled HLO text. Each
  instruction counts once where it appears (one inside a loop body counts once); the async
  `-done` halves are not counted."""
  out = {}
  for line in hlo_text.splitlines():
    m = _COLLECTIVE_LINE.search(line)
    if not m or "-done(" in line:
      continue
    op = m["op"]
    entry = out.setdefault(op, {"count": 0, "bytes": 0})
    entry["count"] += 1
    entry["bytes"] += _array_bytes(m["shape"], op, bool(m["start"]))
  return out


def collective_sources(hlo_text: str, op: str) -> list[str]:
  """The jax op names (metadata op_name) of the `op` instructions: where they come from."""
  names = []
  for line in hlo_text.splitlines():
    m = _COLLECTIVE_LINE.search(line)
    if m and m["op"] == op and "-done(" not in line:
      src = re.search(r'op_name="([^"]*)"', line)
      names.append(src.group(1) if src else "?")
  return names


def abstract_batch(config, global_batch: int, mesh) -> dict:
  """ShapeDtypeStructs of a pipeline batch (input_pipeline.pipeline): `image` uint8 [B, S, S, 3];
  for clip configs also `frames` [B, T, S, S, 3] and the face boxes `box` [B, T, 4]."""
  sharding = parallel.data_sharding(mesh)
  size = config.dataset.image_size
  spec = {"image": ((global_batch, size, size, 3), np.uint8)}
  length = int(config.dataset.clip_length)
  if length > 1:
    spec["frames"] = ((global_batch, length, size, size, 3), np.uint8)
    spec["box"] = ((global_batch, length, 4), np.float32)
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding) for k, (s, d) in spec.items()}


@dataclasses.dataclass
class Compiled:
  """One compiled step and the compiler's figures (per chip)."""
  chips: int
  hosts: int
  global_batch: int
  chip: Chip | None
  compile_s: float
  argument_bytes: int
  temp_bytes: int
  output_bytes: int
  alias_bytes: int
  flops: float
  bytes_accessed: float
  collectives: dict
  hlo: str = dataclasses.field(repr=False, default="")

  @property
  def per_chip_batch(self) -> int:
    return self.global_batch // self.chips

  @property
  def memory_bytes(self) -> int:
    """Arguments + temporaries + outputs, the donated (aliased) state counted once."""
    return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  @property
  def fits(self) -> bool | None:
    return None if self.chip is None else self.memory_bytes <= self.chip.hbm_bytes

  @property
  def roofline_s(self) -> float | None:
    if self.chip is None:
      return None
    return max(self.flops / self.chip.peak_flops, self.bytes_accessed / self.chip.hbm_bandwidth)


def setup_for(config, mesh):
  """train.Setup built abstractly (no device is touched): the step training compiles."""
  from fdeblur import train  # noqa: PLC0415  (train imports the input pipeline)
  return train.Setup(config, mesh, abstract=True)  # reads no pretrained weights


def abstract_state(setup):
  rep = parallel.replicated(setup.mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                      setup.init_state())


def compile_step(config, devices, global_batch: int, keep_hlo: bool = False) -> Compiled:
  """Lowers and compiles the train step of `config` for `devices` at a global batch."""
  mesh = parallel.make_mesh(config.mesh_shape, devices=np.asarray(devices))
  if global_batch % mesh.size:
    raise ValueError(f"global batch {global_batch} is not divisible by the {mesh.size} chips")
  setup = setup_for(config, mesh)
  t = time.perf_counter()
  lowered = setup._step.lower(abstract_state(setup), abstract_batch(config, global_batch, mesh),  # noqa: SLF001
                              setup.vgg)
  try:
    compiled = lowered.compile()
  except Exception as e:  # noqa: BLE001  XLA:TPU refuses a program that exceeds the HBM
    needed = _exhausted_bytes(str(e))
    if needed is None:
      raise
    return Compiled(chips=len(devices), hosts=_hosts(devices), global_batch=global_batch,
                    chip=chip(devices[0]), compile_s=time.perf_counter() - t, argument_bytes=0,
                    temp_bytes=needed, output_bytes=0, alias_bytes=0, flops=float("nan"),
                    bytes_accessed=float("nan"), collectives={})
  seconds = time.perf_counter() - t
  return analyse(compiled, devices, global_batch, seconds, keep_hlo)


def _exhausted_bytes(message: str) -> int | None:
  """The temporaries' size in XLA:TPU's "Ran out of memory in memory space hbm ... (269.01G)"
  refusal, or None for any other error."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  m = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\)", message)
  scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  return int(float(m.group(1)) * scale[m.group(2)]) if m else 1 << 62


def _hosts(devices) -> int:
  return len({d.process_index for d in devices})


def compile_blur(config, devices, global_batch: int, method: str = "") -> Compiled:
  """The step's blur synthesis alone (objectives.make_blur), compiled as the step holds it, for
  its share of the step's FLOPs and bytes. method: "fft" or "direct" forces how kernels are
  applied (else config.blur.fft_min_kernel_size, 0 = by platform)."""
  from fdeblur import objectives  # noqa: PLC0415
  mesh = parallel.make_mesh(config.mesh_shape, devices=np.asarray(devices))
  blur_config = config.blur.copy_and_resolve_references()
  if method:
    blur_config.fft_min_kernel_size = {"fft": 1, "direct": 1 << 30}[method]
  blur = objectives.make_blur(blur_config, mesh)
  key = jax.ShapeDtypeStruct((2,), np.uint32, sharding=parallel.replicated(mesh))
  batch = abstract_batch(config, global_batch, mesh)
  t = time.perf_counter()
  compiled = jax.jit(lambda k, b: blur(k, objectives.degrade_input(b))).lower(key, batch).compile()
  return analyse(compiled, devices, global_batch, time.perf_counter() - t)


def analyse(compiled, devices, global_batch: int, seconds: float, keep_hlo: bool = False):
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  hlo = compiled.as_text()
  return Compiled(
      chips=len(devices), hosts=_hosts(devices),
      global_batch=global_batch, chip=chip(devices[0]), compile_s=seconds,
      argument_bytes=mem.argument_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
      output_bytes=mem.output_size_in_bytes, alias_bytes=mem.alias_size_in_bytes,
      flops=float(cost.get("flops", 0.0)), bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      collectives=collectives(hlo), hlo=hlo if keep_hlo else "")


def fit(config, devices, start: int = 1, max_compiles: int = 8, log=print) -> tuple:
  """(largest per-chip batch that fits the chip's HBM, its Compiled, {batch: Compiled} tried).

  Memory grows about linearly with the batch: two compiles (b, 2b) give the slope, the
  prediction (at most 8x the last batch that fit) is then compiled, and the bracket between a
  batch that fits and one that does not is narrowed by bisection, or widened, until it closes or
  `max_compiles` is spent. A program over the HBM is refused by XLA:TPU (RESOURCE_EXHAUSTED):
  that counts as "does not fit"."""
  n = len(devices)
  kind = chip(devices[0])
  if kind is None:
    raise ValueError(f"--fit needs a TPU target with a known HBM size; {devices[0].device_kind} "
                     f"is not one of {sorted(CHIPS)}")
  tried = {}

  def run(b):
    r = compile_step(config, devices, b * n)
    tried[b] = r
    log(f"  per-chip batch {b}: {r.memory_bytes / GiB:.2f} GiB of {kind.hbm_bytes / GiB:.0f} "
        f"({'fits' if r.fits else 'does not fit'}), compiled in {r.compile_s:.0f} s")
    return r.fits

  def fitting():
    return [b for b, r in tried.items() if r.fits]

  lo, hi = 0, None  # largest known to fit, smallest known not to fit
  b = max(start, 1)
  while len(tried) < max_compiles and (hi is None or hi - lo > 1):
    if run(b):
      lo = max(lo, b)
    else:
      hi = b if hi is None else min(hi, b)
    ok = sorted(fitting())
    if hi is not None:
      b = (lo + hi) // 2 if lo else max(hi // 2, 1)
      if b in tried:
        break
    elif len(ok) >= 2:  # linear prediction from the two largest that fit, capped at 8x
      (b1, b2), (m1, m2) = ok[-2:], (tried[ok[-2]].memory_bytes, tried[ok[-1]].memory_bytes)
      slope = max((m2 - m1) / (b2 - b1), 1.0)
      b = int(min(b2 + (kind.hbm_bytes - m2) // slope, 8 * b2))
      b = max(b, b2 + 1)
    else:
      b = 2 * b
  return lo, tried.get(lo), tried


def estimate_fit(r: Compiled) -> int:
  """The largest per-chip batch estimated from one compile, taking the state (arguments and
  outputs, the donated part once) as fixed and the temporaries as proportional to the batch."""
  fixed = r.argument_bytes + r.output_bytes - r.alias_bytes
  per_sample = r.temp_bytes / r.per_chip_batch
  return max(int((r.chip.hbm_bytes - fixed) // per_sample), 0) if per_sample else 0


def _gib(n: float) -> str:
  return f"{n / GiB:.2f} GiB"


def table(config_name: str, topology: str, r: Compiled) -> str:
  """The report of one compiled step, as a markdown table."""
  kind = r.chip
  rows = [
      ("config", f"`{config_name}`, {r.global_batch // r.chips} per chip"),
      ("target", f"{topology or 'local devices'}: {r.chips} chips"
                 f"{' ' + kind.name if kind else ''}, {r.hosts} hosts"),
      ("global / per-host batch", f"{r.global_batch} / {r.global_batch // r.hosts}"),
      ("memory per chip", f"{_gib(r.memory_bytes)} = arguments {_gib(r.argument_bytes)} + "
                          f"temporaries {_gib(r.temp_bytes)} + outputs {_gib(r.output_bytes)}"
                          f" - aliased (donated) {_gib(r.alias_bytes)}"),
  ]
  if kind:
    rows.append(("HBM per chip", f"{_gib(kind.hbm_bytes)}: "
                                 f"{'fits' if r.fits else 'DOES NOT FIT'} "
                                 f"({100 * r.memory_bytes / kind.hbm_bytes:.0f} %)"))
  rows += [("FLOPs per chip per step", f"{r.flops / 1e9:,.1f} GFLOP"),
           ("bytes per chip per step", f"{r.bytes_accessed / 1e9:,.2f} GB")]
  if kind:
    t_flops, t_bytes = r.flops / kind.peak_flops, r.bytes_accessed / kind.hbm_bandwidth
    rows.append(("roofline bound", f"{1e3 * max(t_flops, t_bytes):.2f} ms/step "
                 f"({'compute' if t_flops >= t_bytes else 'memory'}-bound: "
                 f"{1e3 * t_flops:.2f} ms at {kind.peak_flops / 1e12:.0f} TFLOP/s bf16, "
                 f"{1e3 * t_bytes:.2f} ms at {kind.hbm_bandwidth / 1e9:.0f} GB/s) = "
                 f"{r.per_chip_batch / max(t_flops, t_bytes):,.0f} images/s/chip"))
  coll = ", ".join(f"{op} ×{v['count']} ({v['bytes'] / 2**20:,.1f} MiB)"
                   for op, v in sorted(r.collectives.items())) or "none"
  rows += [("collectives", coll), ("compile time", f"{r.compile_s:.1f} s")]
  lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
  return "\n".join(lines)


def run(config, config_name: str, topology: str = "", per_chip_batch: int = 0,
        search: bool = False, log=print) -> Compiled:
  """--mode=compile: compile, print the table; with `search`, first find the largest per-chip
  batch that fits."""
  devices = target_devices(topology)
  n = len(devices)
  if search:
    log(f"Searching the largest per-chip batch of {config_name} that fits on {topology}:")
    best, result, _ = fit(config, devices, start=max(per_chip_batch, 1), log=log)
    if not best:
      log(f"{config_name}: does not fit on {topology} even at 1 sample per chip.")
      return None
    log(f"Largest per-chip batch that fits: {best}")
  else:
    global_batch = per_chip_batch * n if per_chip_batch else config.train.batch_size
    if global_batch % n:
      raise ValueError(f"config.train.batch_size={global_batch} is not divisible by the {n} "
                       f"chips of {topology or 'the local devices'}: pass --per_chip_batch")
    result = compile_step(config, devices, global_batch)
  log(table(config_name, topology, result))
  if result.fits is False:
    log(f"{config_name} at {result.per_chip_batch} per chip does NOT fit: "
        f"{_gib(result.memory_bytes)} > {_gib(result.chip.hbm_bytes)} HBM per chip.")
  return result
