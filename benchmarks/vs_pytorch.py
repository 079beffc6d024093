"""The DeblurGAN generator's training step (Fan & Luo / quickstart): fdeblur's JAX (jit, donated
buffers) against a PyTorch eager implementation of the same network, loss, optimiser and batch,
measured side by side in one run on this machine, both on the same device.

    python -m benchmarks.vs_pytorch [--steps 10] [--sizes 64,128] [--threads N]
        [--device auto|cpu|gpu] [--dtype float32|bfloat16] [--rows NGF:BATCH,...]

Both sides: blurry batch in [0, 1] -> generator -> L1 to the sharp batch -> Adam (1e-4, β1 0.5).
The PyTorch model is DeblurGAN's ResnetGenerator (reflection pads, InstanceNorm without affine,
ConvTranspose2d(k3, s2, p1, output_padding 1), tanh, global skip with clamp); the script checks
that both have the same number of parameters. Needs torch (`pip install torch==2.13.0`, the CPU
build); without it the table says so. Rows: quickstart's width (ngf 16) and the paper's (ngf 64).

--device: where both sides run. auto (default): the GPU when JAX and PyTorch both see one (or
JAX does and PyTorch is not installed: JAX alone), else the CPU; gpu: an error naming the side
that sees none. On the GPU the PyTorch step ends with `torch.cuda.synchronize()` (the JAX one
waits for its loss), PyTorch runs with `cudnn.benchmark` (XLA autotunes its convolutions too),
and the rows are GPU-sized by default (quickstart's batch 16 and 64 at ngf 16; the paper's
batch 1, then 16 and 64 at ngf 64). --dtype bfloat16: the JAX generator computes in bfloat16
(`config.model.dtype`, as any fdeblur config can set it: float32 parameters, bfloat16
activations, float32 norms) and PyTorch's forward and loss run under
`torch.autocast(dtype=torch.bfloat16)` (float32 parameters and optimiser on both sides).
On an accelerator the table adds the step's GFLOP (XLA's cost analysis of the lowered JAX step,
the same network's FLOPs for both sides) and each side's MFU against the device's dense
bf16 peak (`benchmarks.train_step.PEAK_FLOPS`).
"""
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.train_step import peak_flops  # noqa: E402
from fdeblur import models, networks  # noqa: E402
from fdeblur.models import layers  # noqa: E402


def torch_generator(ngf: int, n_blocks: int):
  import torch.nn as nn  # pylint: disable=import-outside-toplevel

  class ResnetBlock(nn.Module):

    def __init__(self, dim):
      super().__init__()
      self.block = nn.Sequential(
          nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
          nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

    def forward(self, x):
      return x + self.block(x)

  class Generator(nn.Module):

    def __init__(self):
      super().__init__()
      layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
      for m in (1, 2):
        layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1),
                   nn.InstanceNorm2d(ngf * m * 2), nn.ReLU(True)]
      layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
      for m in (4, 2):
        layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1,
                                      output_padding=1),
                   nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
      layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
      self.model = nn.Sequential(*layers)

    def forward(self, x):  # x in [0, 1], as fdeblur's generators
      s = x * 2 - 1
      return (self.model(s) + s).clamp(-1, 1) * 0.5 + 0.5

  return Generator()


def interleaved_medians(fns, steps):
  """Median seconds of each callable over `steps` rounds, the callables taking turns within a
  round (after one warm-up call each, which also compiles the JAX side): on a shared machine both
  sides see the same background load."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for _ in range(steps):
    for fn, t in zip(fns, times):
      t0 = time.perf_counter()
      fn()
      t.append(time.perf_counter() - t0)
  return [statistics.median(t) for t in times]


def jax_generator(ngf: int, xla_convolutions: bool = False,
                  dtype: str = "float32") -> networks.Networks:
  """fdeblur's DeblurGAN generator (6 blocks, no dropout), computing in `dtype`;
  xla_convolutions: built with XLA's own convolution ops (`layers.xla_convolutions`)."""
  cfg = ml_collections.ConfigDict({"seed": 0, "model": models.model_config(
      "deblurgan", ngf=ngf, n_blocks=6, dropout=0.0, dtype=dtype)})
  with layers.xla_convolutions() if xla_convolutions else contextlib.nullcontext():
    return networks.Networks.generator(cfg)


DTYPES = ("float32", "bfloat16")
# ngf:batch rows by device: CPU-sized (quickstart width at its batch, the paper width at 4), and
# on a GPU quickstart's batch and a larger one, the paper's batch 1 (DeblurGAN) and larger ones.
DEFAULT_ROWS = {"cpu": "16:16,64:4", "gpu": "16:16,16:64,64:1,64:16,64:64"}


class Steps(NamedTuple):
  jax: Callable[[], None]  # one JAX step, waited for
  torch: Callable[[], None] | None  # one PyTorch step, waited for (None: torch not installed)
  params: int  # parameter count (equal on both sides)
  flops: float | None  # XLA's FLOPs of the JAX step (`_flops`)


def _jax_gpus() -> list:
  try:
    return jax.devices("gpu")
  except RuntimeError:  # no GPU backend (or JAX_PLATFORMS excludes it)
    return []


def _torch_cuda() -> bool | None:
  """torch.cuda.is_available(), or None when torch is not installed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return torch.cuda.is_available()


def select_device(choice: str) -> tuple:
  """(JAX device, PyTorch device name) for --device (auto, cpu or gpu); ValueError naming the
  flag when a GPU is asked for and JAX or PyTorch sees none."""
  gpus, cuda = _jax_gpus(), _torch_cuda()
  if choice == "auto":
    if gpus and cuda is not False:  # torch with CUDA, or no torch: JAX alone
      return gpus[0], "cuda"
    choice = "cpu"
  if choice == "gpu":
    missing = ([] if gpus else [f"JAX (default backend {jax.default_backend()})"]) + (
        [] if cuda else ["PyTorch (" + ("not installed" if cuda is None else
                                        "torch.cuda.is_available() is False") + ")"])
    if missing:
      raise ValueError(f"--device=gpu: no GPU visible to {' or '.join(missing)}")
    return gpus[0], "cuda"
  if choice != "cpu":
    raise ValueError(f"--device={choice}: expected auto, cpu or gpu")
  return jax.devices("cpu")[0], "cpu"


def parse_rows(text: str) -> list[tuple[int, int]]:
  """'16:16,64:4' -> [(16, 16), (64, 4)] (generator width, batch); ValueError naming --rows."""
  rows = []
  for item in text.split(","):
    ngf, _, batch = item.strip().partition(":")
    if not (ngf.isdigit() and batch.isdigit() and int(ngf) > 0 and int(batch) > 0):
      raise ValueError(f"--rows={text}: expected NGF:BATCH pairs of positive integers, "
                       f"e.g. 16:16,64:4 (got {item.strip()!r})")
    rows.append((int(ngf), int(batch)))
  return rows


def _flops(jitted, args) -> tuple:
  """(compiled executable, the step's FLOPs or None): XLA's cost analysis of the lowered step
  (the program as traced, before backend rewrites: the model's FLOPs, its convolutions as
  convolutions on every backend), else of the compiled one."""
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  for analysis in (lowered, compiled):
    try:
      cost = analysis.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      if cost and cost.get("flops", 0) > 0:
        return compiled, float(cost["flops"])
    except Exception:  # noqa: BLE001  cost analysis is best effort (backend-dependent)
      pass
  return compiled, None


def make_steps(ngf, size, batch, xla_convolutions=False, device=None, torch_device="cpu",
               dtype="float32") -> Steps:
  """The generator's L1 + Adam train step on one random batch, each side with its usual fast path
  (JAX: jit with donated parameters and optimiser state, arrays already on the device; PyTorch:
  eager, in-place Adam with its default multi-tensor implementation), both on `device` (a JAX
  device, default the first) / `torch_device` ("cpu" or "cuda") computing in `dtype`.
  xla_convolutions: the JAX network computes its convolutions as XLA's own ops (fdeblur before
  the CPU formulations of `layers`; same parameters)."""
  device = device or jax.devices()[0]
  rng = np.random.default_rng(0)
  blurry = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  sharp = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  tx = optax.adam(1e-4, b1=0.5, b2=0.999)
  with jax.default_device(device):  # parameters and optimiser state made on the device
    nets = jax_generator(ngf, xla_convolutions, dtype)
    state = [nets.params, tx.init(nets.params)]

  def step(params, opt_state, x, y):
    def loss_fn(p):
      return jnp.mean(jnp.abs(nets.apply(p, nets.model_state, x, train=True)[0] - y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  xj, yj = jax.device_put(blurry, device), jax.device_put(sharp, device)
  with layers.target_platform(device.platform):  # the convolutions of the device's platform
    jstep, flops = _flops(jax.jit(step, donate_argnums=(0, 1)), (*state, xj, yj))

  def run_jax():
    state[0], state[1], loss = jstep(state[0], state[1], xj, yj)
    loss.block_until_ready()

  n_jax = sum(x.size for x in jax.tree.leaves(nets.params))
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return Steps(run_jax, None, n_jax, flops)
  model = torch_generator(ngf, 6).to(torch_device)
  n_torch = sum(p.numel() for p in model.parameters())
  if n_torch != n_jax:
    raise AssertionError(f"parameter counts differ: JAX {n_jax}, PyTorch {n_torch}")
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
  xt = torch.from_numpy(blurry).permute(0, 3, 1, 2).contiguous().to(torch_device)
  yt = torch.from_numpy(sharp).permute(0, 3, 1, 2).contiguous().to(torch_device)
  cuda = torch_device == "cuda"
  if cuda:
    torch.backends.cudnn.benchmark = True
  amp = (torch.autocast(torch_device, dtype=torch.bfloat16) if dtype == "bfloat16"
         else contextlib.nullcontext())

  def run_torch():
    opt.zero_grad(set_to_none=True)
    with amp:
      loss = (model(xt) - yt).abs().mean()
    loss.backward()
    opt.step()
    if cuda:
      torch.cuda.synchronize()

  return Steps(run_jax, run_torch, n_jax, flops)


def measure(ngf, size, batch, steps, before=False, device=None, torch_device="cpu",
            dtype="float32"):
  s = make_steps(ngf, size, batch, device=device, torch_device=torch_device, dtype=dtype)
  fns = [s.jax] + ([s.torch] if s.torch else [])
  if before:
    fns.append(make_steps(ngf, size, batch, xla_convolutions=True, device=device,
                          torch_device=torch_device, dtype=dtype).jax)
  times = interleaved_medians(fns, steps)
  row = {"ngf": ngf, "size": size, "batch": batch, "params": s.params, "flops": s.flops,
         "jax_ms": times[0] * 1e3, "torch_ms": times[1] * 1e3 if s.torch else None,
         "before_ms": times[-1] * 1e3 if before else None}
  return row


def table_header(before: bool, peak: float | None) -> str:
  """The table's header and separator lines; `peak`: the device's peak FLOP/s (MFU columns)."""
  b = "JAX before ms | speed-up before | " if before else ""
  mfu = " GFLOP/step | JAX MFU | PyTorch MFU |" if peak else ""
  return (f"| generator | image | batch | parameters | JAX step ms | PyTorch step ms | {b}"
          f"JAX speed-up |{mfu}\n"
          "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else "") + "---:|"
          + ("---:|---:|---:|" if peak else ""))


def table_row(r: dict, before: bool, peak: float | None) -> str:
  """One row of `measure`'s result; MFU = XLA's FLOPs of the step / step time / `peak`."""
  t = r["torch_ms"]
  ratio = f"{t / r['jax_ms']:.2f}×" if t else "n/a"
  tt = f"{t:,.1f}" if t else "n/a"
  b = ""
  if before:
    b = f"{r['before_ms']:,.1f} | " + (f"{t / r['before_ms']:.2f}× | " if t else "n/a | ")
  line = (f"| deblurgan ngf {r['ngf']} | {r['size']}² | {r['batch']} | {r['params']:,} | "
          f"{r['jax_ms']:,.1f} | {tt} | {b}{ratio} |")
  if peak:
    flops = r["flops"]

    def mfu(ms):
      return f"{100 * flops / (ms / 1e3) / peak:.1f}%" if (flops and ms) else "n/a"

    line += (f" {flops / 1e9:,.1f} |" if flops else " n/a |") + f" {mfu(r['jax_ms'])} | {mfu(t)} |"
  return line


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_integer("steps", 10, "Timed steps per setting.")
  flags.DEFINE_string("sizes", "64,128", "Comma-separated image sizes.")
  flags.DEFINE_integer("threads", os.cpu_count() or 1,
                       "PyTorch intra-op threads on the CPU (XLA uses every core).")
  flags.DEFINE_bool("before", False, "Also time the JAX step with XLA's own convolutions "
                    "(fdeblur's formulation before the CPU rewrites of models/layers.py).")
  flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"], "Where both sides run: auto = the "
                    "GPU when JAX and PyTorch both see one, else the CPU.")
  flags.DEFINE_enum("dtype", "float32", list(DTYPES), "Computation dtype of both sides: the JAX "
                    "generator's config.model.dtype, PyTorch's autocast (parameters float32).")
  flags.DEFINE_string("rows", "", "Comma-separated NGF:BATCH (generator width and batch) rows; "
                      f"default by device: {DEFAULT_ROWS}.")


def main(argv):
  del argv
  args = flags.FLAGS
  try:
    device, torch_device = select_device(args.device)
    on_gpu = device.platform == "gpu"
    rows = parse_rows(args.rows or DEFAULT_ROWS["gpu" if on_gpu else "cpu"])
  except ValueError as e:
    sys.exit(f"vs_pytorch: {e}")
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    where = (f"on cuda ({torch.cuda.get_device_name(0)})" if on_gpu
             else f"{args.threads} threads")
    if on_gpu:  # float32 convolutions: TF32 on both sides unless configured otherwise
      where += (f", cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, JAX default precision "
                f"{jax.config.jax_default_matmul_precision or 'default'}")
    torch_note = f"PyTorch {torch.__version__} eager, {where}"
  except ImportError:
    torch_note = "PyTorch not installed (pip install torch==2.13.0): no comparison"
  dtype_note = (f"; both sides compute in {args.dtype} (JAX config.model.dtype, PyTorch autocast)"
                if args.dtype != "float32" else "")
  print(f"JAX {jax.__version__} on {device.device_kind}; {torch_note}{dtype_note}")
  peak = peak_flops(device)
  if peak:
    print(f"MFU: XLA's FLOPs of the JAX step (also PyTorch's) / step time / "
          f"{peak / 1e12:.0f} TFLOP/s (dense bf16 peak of {device.device_kind})")
  print()
  print(table_header(args.before, peak))
  for ngf, batch in rows:
    for size in (int(s) for s in args.sizes.split(",")):
      r = measure(ngf, size, batch, args.steps, before=args.before, device=device,
                  torch_device=torch_device, dtype=args.dtype)
      print(table_row(r, args.before, peak), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
