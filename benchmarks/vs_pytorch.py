"""The DeblurGAN generator's training step (Fan & Luo / quickstart): fdeblur's JAX (jit, donated
buffers) against a PyTorch eager implementation of the same network, loss, optimiser and batch,
measured side by side in one run on this machine.

    python -m benchmarks.vs_pytorch [--steps 10] [--sizes 64,128] [--threads N]

Both sides: blurry batch in [0, 1] -> generator -> L1 to the sharp batch -> Adam (1e-4, β1 0.5).
The PyTorch model is DeblurGAN's ResnetGenerator (reflection pads, InstanceNorm without affine,
ConvTranspose2d(k3, s2, p1, output_padding 1), tanh, global skip with clamp); the script checks
that both have the same number of parameters. Needs torch (`pip install torch==2.13.0`, the CPU
build); without it the table says so. Rows: quickstart's width (ngf 16) and the paper's (ngf 64).
"""
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

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


def jax_generator(ngf: int, xla_convolutions: bool = False) -> networks.Networks:
  """fdeblur's DeblurGAN generator (6 blocks, no dropout); xla_convolutions: built with XLA's own
  convolution ops (`layers.xla_convolutions`)."""
  cfg = ml_collections.ConfigDict({"seed": 0, "model": models.model_config(
      "deblurgan", ngf=ngf, n_blocks=6, dropout=0.0)})
  with layers.xla_convolutions() if xla_convolutions else contextlib.nullcontext():
    return networks.Networks.generator(cfg)


def make_steps(ngf, size, batch, xla_convolutions=False):
  """(JAX step, PyTorch step or None, parameter count): the generator's L1 + Adam train step on
  one random batch, each side with its usual fast path (JAX: jit with donated parameters and
  optimiser state, arrays already on the device; PyTorch: eager, in-place Adam with its default
  multi-tensor implementation). Each call runs one step and waits for its result.
  xla_convolutions: the JAX network computes its convolutions as XLA's own ops (fdeblur before
  the CPU formulations of `layers`; same parameters)."""
  rng = np.random.default_rng(0)
  blurry = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  sharp = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  nets = jax_generator(ngf, xla_convolutions)
  tx = optax.adam(1e-4, b1=0.5, b2=0.999)

  def step(params, opt_state, x, y):
    def loss_fn(p):
      return jnp.mean(jnp.abs(nets.apply(p, nets.model_state, x, train=True)[0] - y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  jstep = jax.jit(step, donate_argnums=(0, 1))
  state = [nets.params, tx.init(nets.params)]
  xj, yj = jax.device_put(blurry), jax.device_put(sharp)

  def run_jax():
    state[0], state[1], loss = jstep(state[0], state[1], xj, yj)
    loss.block_until_ready()

  n_jax = sum(x.size for x in jax.tree.leaves(nets.params))
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return run_jax, None, n_jax
  model = torch_generator(ngf, 6)
  n_torch = sum(p.numel() for p in model.parameters())
  if n_torch != n_jax:
    raise AssertionError(f"parameter counts differ: JAX {n_jax}, PyTorch {n_torch}")
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
  xt = torch.from_numpy(blurry).permute(0, 3, 1, 2).contiguous()
  yt = torch.from_numpy(sharp).permute(0, 3, 1, 2).contiguous()

  def run_torch():
    opt.zero_grad(set_to_none=True)
    loss = (model(xt) - yt).abs().mean()
    loss.backward()
    opt.step()

  return run_jax, run_torch, n_jax


def measure(ngf, size, batch, steps, before=False):
  run_jax, run_torch, n_params = make_steps(ngf, size, batch)
  fns = [run_jax] + ([run_torch] if run_torch else [])
  if before:
    fns.append(make_steps(ngf, size, batch, xla_convolutions=True)[0])
  times = interleaved_medians(fns, steps)
  row = {"ngf": ngf, "size": size, "batch": batch, "params": n_params,
         "jax_ms": times[0] * 1e3, "torch_ms": times[1] * 1e3 if run_torch else None,
         "before_ms": times[-1] * 1e3 if before else None}
  return row


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_integer("steps", 10, "Timed steps per setting.")
  flags.DEFINE_string("sizes", "64,128", "Comma-separated image sizes.")
  flags.DEFINE_integer("threads", os.cpu_count() or 1,
                       "PyTorch intra-op threads (XLA uses every core).")
  flags.DEFINE_bool("before", False, "Also time the JAX step with XLA's own convolutions "
                    "(fdeblur's formulation before the CPU rewrites of models/layers.py).")


def main(argv):
  del argv
  args = flags.FLAGS
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.threads)
    torch_note = f"PyTorch {torch.__version__} eager, {args.threads} threads"
  except ImportError:
    torch_note = "PyTorch not installed (pip install torch==2.13.0): no comparison"
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; {torch_note}")
  print()
  before = ("JAX before ms | speed-up before | " if args.before else "")
  print(f"| generator | image | batch | parameters | JAX step ms | PyTorch step ms | {before}"
        "JAX speed-up |")
  print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.before else "") + "---:|")
  for ngf, batch in ((16, 16), (64, 4)):
    for size in (int(s) for s in args.sizes.split(",")):
      r = measure(ngf, size, batch, args.steps, before=args.before)
      t = r["torch_ms"]
      ratio = f"{t / r['jax_ms']:.2f}×" if t else "n/a"
      tt = f"{t:,.1f}" if t else "n/a"
      b = ""
      if args.before:
        b = f"{r['before_ms']:,.1f} | " + (f"{t / r['before_ms']:.2f}× | " if t else "n/a | ")
      print(f"| deblurgan ngf {ngf} | {size}² | {batch} | {r['params']:,} | {r['jax_ms']:,.1f} | "
            f"{tt} | {b}{ratio} |", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
