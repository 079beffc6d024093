"""Per-operation profile of the DeblurGAN generator's train step on this machine: every kind of
layer of the network timed alone, forward and forward + backward, JAX (jit, fdeblur's layers) next
to PyTorch eager (the same op, same shapes, same weights), then the whole step (vs_pytorch's).

    python -m benchmarks.profile_step [--ngf 64] [--size 128] [--batch 4] [--repeats 5]
        [--ops res,res_xla,res_im2col,res_winograd2,up1,up1_xla,step,...] [--xla_dump DIR]

Each row's op runs on its own input shape at the given width/image size; "× in net" is how often
the network runs it per step, and "share" is count × JAX forward + backward over the sum of the
rows (the step's time as these ops see it; fusion across layers is not in it; rows of another
formulation, KEY_xla, KEY_im2col, KEY_winograd..., count 0 times). Forward + backward
is one `jax.vjp` with a fixed random cotangent: gradients of the parameters and of the input
(the input's only where the network needs it: not for the first pad and conv). The PyTorch side
does the same (`backward(cotangent)`, `requires_grad` as on the JAX side). Before timing, each
row checks that both sides compute the same forward output (float32 tolerance), so the PyTorch
op really is the JAX op's counterpart.

Timing: median over --repeats rounds in which JAX forward, JAX forward + backward and PyTorch
forward + backward take turns (after one warm-up call each), so both see the same background load
on a shared machine; compare ratios, not absolute times, across runs. PyTorch runs with as many
intra-op threads as there are cores (its default); XLA:CPU's Eigen pool also uses every core.
--xla_dump DIR writes each jitted program's optimised HLO (XLA_FLAGS=--xla_dump_to) to see what
an op lowers to (e.g. `grep -l convolution DIR/*after_optimizations.txt`).
"""
import contextlib
import functools
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.vs_pytorch import (  # noqa: E402
    interleaved_medians, jax_generator, make_steps, torch_generator)
from fdeblur.models import layers  # noqa: E402


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_integer("ngf", 64, "Generator width.")
  flags.DEFINE_integer("size", 128, "Image size.")
  flags.DEFINE_integer("batch", 4, "Batch size.")
  flags.DEFINE_integer("repeats", 5, "Timed rounds per row.")
  flags.DEFINE_list("ops", [], "Row keys (default: all but the *_xla rows): pad3, stem, norm1, "
                    "down1, down2, norm2, norm3, pad1, res, up1, up2, pad3h, head, adam, step; "
                    "KEY_xla: the conv/step row with XLA's own convolution ops (before); "
                    "KEY_im2col, KEY_winograd, KEY_winograd2 (conv rows): that layer with "
                    "layers.conv_im2col, conv_winograd F(4x4, 3x3) or F(2x2, 3x3) whatever "
                    "the platform hook would choose; step_nowinograd: the step without "
                    "conv_winograd.")
  flags.DEFINE_string("xla_dump", "", "Directory for XLA's optimised HLO of every jitted row.")
  flags.DEFINE_integer("threads", os.cpu_count() or 1, "PyTorch intra-op threads.")


def _nchw(a):
  return np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1))


def _torch_conv_weight(kernel):  # HWIO -> OIHW
  return np.ascontiguousarray(np.transpose(np.asarray(kernel), (3, 2, 0, 1)))


def _torch_convT_weight(kernel):
  # fdeblur's ConvTranspose (flax, transpose_kernel=False) correlates the dilated input with the
  # kernel as stored; PyTorch's ConvTranspose2d scatters with it, i.e. correlates with the
  # spatially flipped kernel. Its weight is (in, out, kh, kw).
  return np.ascontiguousarray(np.transpose(np.asarray(kernel)[::-1, ::-1], (2, 3, 0, 1)))


# KEY_FORM rows: the conv layer with this formulation instead of the platform hook's choice.
FORMS = {
    "im2col": layers.conv_im2col,
    "winograd": functools.partial(layers.conv_winograd, tile=4),
    "winograd2": functools.partial(layers.conv_winograd, tile=2),
}
_FORCED = [None]
CONV_KEYS = ("stem", "down1", "down2", "res", "head")


def _forced_hook(form):
  """An `nnx.Conv` conv_general_dilated that always computes `form` (2-D NHWC, no dilation)."""
  def hook(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
           dimension_numbers=None, feature_group_count=1, precision=None,
           preferred_element_type=None, **kwargs):
    del lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, kwargs
    return form(lhs, rhs, tuple(window_strides), padding, precision=precision,
                preferred_element_type=preferred_element_type)
  return hook


def op_specs(ngf, size, batch, n_blocks=6):
  """Row key -> (label, input NHWC shape, count in the network, builder). A builder returns
  (jax_fn(params, x), params, torch_module or None)."""
  import torch.nn as tnn  # pylint: disable=import-outside-toplevel
  rngs = nnx.Rngs(0)
  s1, s2, s4 = size, size // 2, size // 4

  def module_fn(module):
    graphdef, params = nnx.split(module)
    return (lambda p, x: nnx.merge(graphdef, p)(x)), params

  def conv(cin, cout, k, stride=1, padding="VALID"):
    def build():
      forced = {} if _FORCED[0] is None else {"conv_general_dilated": _forced_hook(_FORCED[0])}
      m = layers.Conv(cin, cout, (k, k), strides=stride, padding=padding, rngs=rngs, **forced)
      fn, params = module_fn(m)
      t = tnn.Conv2d(cin, cout, k, stride=stride,
                     padding=0 if padding == "VALID" else padding[0][0])
      _copy(t, _torch_conv_weight(m.kernel[...]), m.bias[...])
      return fn, params, t
    return build

  def conv_t(cin, cout):
    def build():
      m = layers.ConvTranspose(cin, cout, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                               rngs=rngs)
      fn, params = module_fn(m)
      t = tnn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
      _copy(t, _torch_convT_weight(m.kernel[...]), m.bias[...])
      return fn, params, t
    return build

  def norm(c):
    def build():
      fn, params = module_fn(layers.InstanceNorm(c, rngs=rngs))
      return fn, params, tnn.InstanceNorm2d(c)
    return build

  def pad(p):
    def build():
      return (lambda params, x: layers.reflect_pad(x, p)), {}, tnn.ReflectionPad2d(p)
    return build

  b = batch
  pad1 = ((1, 1), (1, 1))
  return {
      "pad3": ("reflect pad 3 (input)", (b, s1, s1, 3), 1, pad(3)),
      "stem": ("conv 7×7 stem", (b, s1 + 6, s1 + 6, 3), 1, conv(3, ngf, 7)),
      "norm1": ("instance norm", (b, s1, s1, ngf), 2, norm(ngf)),
      "down1": ("conv 3×3 stride 2", (b, s1, s1, ngf), 1, conv(ngf, 2 * ngf, 3, 2, pad1)),
      "down2": ("conv 3×3 stride 2", (b, s2, s2, 2 * ngf), 1, conv(2 * ngf, 4 * ngf, 3, 2, pad1)),
      "norm2": ("instance norm", (b, s2, s2, 2 * ngf), 2, norm(2 * ngf)),
      "norm3": ("instance norm", (b, s4, s4, 4 * ngf), 1 + 2 * n_blocks, norm(4 * ngf)),
      "pad1": ("reflect pad 1 (residual)", (b, s4, s4, 4 * ngf), 2 * n_blocks, pad(1)),
      "res": ("conv 3×3 residual", (b, s4 + 2, s4 + 2, 4 * ngf), 2 * n_blocks,
              conv(4 * ngf, 4 * ngf, 3)),
      "up1": ("transposed conv 3×3 stride 2", (b, s4, s4, 4 * ngf), 1, conv_t(4 * ngf, 2 * ngf)),
      "up2": ("transposed conv 3×3 stride 2", (b, s2, s2, 2 * ngf), 1, conv_t(2 * ngf, ngf)),
      "pad3h": ("reflect pad 3 (head)", (b, s1, s1, ngf), 1, pad(3)),
      "head": ("conv 7×7 head", (b, s1 + 6, s1 + 6, ngf), 1, conv(ngf, 3, 7)),
  }


def _copy(module, weight, bias):
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    module.weight.copy_(torch.from_numpy(np.asarray(weight)))
    module.bias.copy_(torch.from_numpy(np.asarray(bias)))


def time_op(key, spec, repeats, form=""):
  """form "xla": the layer built with XLA's own convolution ops (`layers.xla_convolutions`); a
  key of FORMS: with that formulation (conv rows)."""
  import torch  # pylint: disable=import-outside-toplevel
  label, shape, count, build = spec
  _FORCED[0] = FORMS.get(form)
  try:
    with layers.xla_convolutions() if form == "xla" else contextlib.nullcontext():
      fn, params, tmod = build()
  finally:
    _FORCED[0] = None
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  input_grad = key not in ("pad3", "stem")
  xj = jax.device_put(x)
  fwd = jax.jit(fn)
  y = fwd(params, xj)
  ct = jax.device_put(rng.standard_normal(y.shape).astype(np.float32))

  def fwd_bwd(p, x):
    out, vjp = jax.vjp(fn, p, x)
    grads = vjp(ct)
    return out, (grads if input_grad else grads[0])

  # The input's pad has nothing to differentiate: its "forward + backward" is the forward.
  has_backward = input_grad or bool(jax.tree.leaves(params))
  fb = jax.jit(fwd_bwd) if has_backward else fwd
  xt = torch.from_numpy(_nchw(x)).requires_grad_(input_grad)
  ctt = torch.from_numpy(_nchw(ct))
  yt = tmod(xt).detach().numpy()
  np.testing.assert_allclose(np.moveaxis(yt, 1, -1), np.asarray(y), rtol=2e-4, atol=2e-4,
                             err_msg=f"{key}: the PyTorch op does not compute the JAX op")

  def run_torch():
    if not has_backward:
      with torch.no_grad():
        return tmod(xt)
    for p in tmod.parameters():
      p.grad = None
    xt.grad = None
    return tmod(xt).backward(ctt)

  t_fwd, t_fb, t_torch = interleaved_medians(
      [lambda: fwd(params, xj).block_until_ready(),
       lambda: jax.block_until_ready(fb(params, xj)), run_torch], repeats)
  if form:
    key, label, count = f"{key}_{form}", label + (", XLA's op (before)" if form == "xla" else
                                                  f", {form}"), 0
  return {"key": key, "op": label, "shape": "×".join(map(str, shape)), "count": count,
          "jax_fwd": t_fwd * 1e3, "jax_fb": t_fb * 1e3, "torch_fb": t_torch * 1e3}


def time_adam(ngf, repeats):
  """optax.adam over the generator's parameters (fresh gradients) vs torch.optim.Adam."""
  import optax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  params = jax_generator(ngf).params
  tx = optax.adam(1e-4, b1=0.5, b2=0.999)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

  def update(params, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  jupdate = jax.jit(update, donate_argnums=(0, 1))
  state = [params, tx.init(params)]

  def run_jax():
    state[0], state[1] = jupdate(state[0], state[1])
    jax.block_until_ready(state)

  model = torch_generator(ngf, 6)
  for p in model.parameters():
    p.grad = torch.full_like(p, 1e-3)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
  t_jax, t_torch = interleaved_medians([run_jax, opt.step], repeats)
  n = sum(x.size for x in jax.tree.leaves(params))
  return {"key": "adam", "op": "Adam update", "shape": f"{n:,} params", "count": 1,
          "jax_fwd": None, "jax_fb": t_jax * 1e3, "torch_fb": t_torch * 1e3}


@contextlib.contextmanager
def _without_winograd():
  """Convolutions traced inside do not take `layers.conv_winograd` (its channel threshold off)."""
  saved, layers.WINOGRAD_MIN_CHANNELS = layers.WINOGRAD_MIN_CHANNELS, math.inf
  try:
    yield
  finally:
    layers.WINOGRAD_MIN_CHANNELS = saved


def time_step(ngf, size, batch, repeats, form=""):
  """form "xla": the network with XLA's own convolution ops; "nowinograd": traced with the 3x3
  stride-1 convolutions in the form they took before `layers.conv_winograd` (same parameters)."""
  with _without_winograd() if form == "nowinograd" else contextlib.nullcontext():
    steps = make_steps(ngf, size, batch, xla_convolutions=form == "xla")
    steps.jax()  # traced and compiled here (if make_steps has not), kept by jit
  t_jax, t_torch = interleaved_medians([steps.jax, steps.torch], repeats)
  label = "**whole step** (L1 + Adam)" + {"": "", "xla": ", XLA's convs (before)",
                                          "nowinograd": ", without Winograd"}[form]
  return {"key": "step", "op": label, "shape": f"{batch}×{size}²×3",
          "count": 1, "jax_fwd": None, "jax_fb": t_jax * 1e3, "torch_fb": t_torch * 1e3}


def _ms(v):
  return "" if v is None else f"{v:,.1f}"


def main(argv):
  del argv
  args = flags.FLAGS
  if args.xla_dump:  # read when the backend starts, i.e. at the first computation below
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_dump_to="
                               f"{args.xla_dump} --xla_dump_hlo_as_text").strip()
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  specs = op_specs(args.ngf, args.size, args.batch)
  keys = list(args.ops) or [*specs, "adam", "step"]
  def known(k):
    base, _, form = k.partition("_")
    if base in ("adam", "step"):
      return form == "" or base == "step" and form in ("xla", "nowinograd")
    return base in specs and (form in ("", "xla") or form in FORMS and base in CONV_KEYS)
  unknown = [k for k in keys if not known(k)]
  if unknown:
    raise SystemExit(f"--ops: unknown keys {unknown}; known: {[*specs, 'adam', 'step']} "
                     f"(each also as KEY_xla, the conv rows as KEY_{{{','.join(FORMS)}}}; "
                     "step_nowinograd)")
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind} ({os.cpu_count()} cores); "
        f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads; DeblurGAN "
        f"generator ngf {args.ngf}, {args.size}², batch {args.batch}; median of {args.repeats} "
        "interleaved rounds")
  print()
  print("| op | input (NHWC) | × in net | JAX fwd ms | JAX fwd+bwd ms | PyTorch fwd+bwd ms | "
        "PyTorch/JAX | JAX share |")
  print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
  rows = []
  for key in keys:
    base, _, form = key.partition("_")
    if base == "adam":
      r = time_adam(args.ngf, args.repeats)
    elif base == "step":
      r = time_step(args.ngf, args.size, args.batch, args.repeats, form)
    else:
      r = time_op(base, specs[base], args.repeats, form)
    rows.append(r)
    print(_row(r, None), flush=True)
  total = sum(r["count"] * r["jax_fb"] for r in rows if r["key"] != "step")
  print()
  print("Sorted by share of the JAX step (count × fwd+bwd / sum over the op rows):")
  print()
  print("| op | input (NHWC) | × in net | JAX fwd ms | JAX fwd+bwd ms | PyTorch fwd+bwd ms | "
        "PyTorch/JAX | JAX share |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for r in sorted(rows, key=lambda r: (r["key"] == "step", -r["count"] * r["jax_fb"])):
    print(_row(r, total))
  op_rows = [r for r in rows if r["key"] != "step"]
  jt = sum(r["count"] * r["jax_fb"] for r in op_rows)
  tt = sum(r["count"] * r["torch_fb"] for r in op_rows)
  if jt:  # (rows of other forms count 0 times in the network)
    print(f"| sum of op rows × count | | | | {jt:,.1f} | {tt:,.1f} | {tt / jt:.2f}× | |")


def _row(r, total):
  share = "" if (not total or r["key"] == "step") else \
      f"{100 * r['count'] * r['jax_fb'] / total:.0f}%"
  return (f"| {r['op']} | {r['shape']} | {r['count']} | {_ms(r['jax_fwd'])} | "
          f"{_ms(r['jax_fb'])} | {_ms(r['torch_fb'])} | {r['torch_fb'] / r['jax_fb']:.2f}× | "
          f"{share} |")


if __name__ == "__main__":
  define_flags()
  app.run(main)
