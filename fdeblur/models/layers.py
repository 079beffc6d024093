"""Building blocks shared by the papers' networks (Flax NNX).

Mixed precision: parameters are float32; `dtype` sets the computation dtype (bfloat16 on
accelerators) of convolutions, whose products accumulate into float32 outputs (`Conv`,
`ConvTranspose`); batch and instance norms compute in float32 and emit the computation dtype.
Every generator maps images in [0, 1] to its working range with `to_signed` and back with
`to_unit_interval` (float32 out).
"""
import contextlib
import fractions
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import normalization as flax_normalization
from jax import lax

# DeblurGAN / pix2pix initialise every convolution with N(0, 0.02).
normal_init = nnx.initializers.normal(stddev=0.02)
# He et al.'s initialisation (ResNet); also used for the hourglass (Newell used Torch's).
he_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
_NHWC = ("NHWC", "HWIO", "NHWC")


# On the CPU, convolutions with at least this many input x output channels run as one matrix
# product over im2col patches (`conv_im2col`); narrower ones as XLA's convolution, which is as fast
# there (benchmarks/profile_step.py). Other backends use XLA's convolution for them.
IM2COL_MIN_CHANNELS = 128 * 128
# Wide kernels with few output channels (the networks' 7x7 image heads, ngf -> 3) run as matrix
# products on the CPU (`conv_tap_matmul`): forward + backward 5.8x faster than XLA:CPU's
# convolution at ngf 64, as fast at ngf 16 (benchmarks/profile_step.py). Stems (3 -> ngf) stay
# XLA's: their im2col form was 1.26x faster at ngf 64, 128², batch 4, but 5-8x slower at ngf 16
# (quickstart, face_model), where XLA's convolution has a fast path. Not on TPU: there they
# compiled only 1.1-1.4x faster and made the step's memory traffic 2-2.6x larger (README,
# "Compiled for a TPU slice").
# 3x3 stride-1 float32 convolutions with at least this many input x output channels (DeblurGAN's
# residual convolutions from ngf 16 on) run as Winograd F(WINOGRAD_TILE² x 3²) on the CPU
# (`conv_winograd`): forward + backward 1.9x faster than XLA:CPU's convolution at 64 channels
# (ngf 16, 16² maps) and 3.1x faster than the im2col form at 256 (ngf 64, 32² maps), 1.4-1.8x
# PyTorch's oneDNN (benchmarks/profile_step.py --ops res,res_xla,res_im2col,res_winograd);
# narrower ones were not measured.
WINOGRAD_MIN_CHANNELS = 64 * 64
WINOGRAD_TILE = 4
WIDE_KERNEL_MIN_SIZE = 5
WIDE_KERNEL_MAX_CHANNELS = 4  # output channels
WIDE_KERNEL_PLATFORMS = ("cpu",)

_TARGET_PLATFORM = [None]


@contextlib.contextmanager
def target_platform(platform: str | None):
  """Convolutions traced inside take the formulation of `platform` ("cpu", "gpu", "tpu"; None:
  JAX's default backend): the program may be compiled for other devices than the host's (a TPU
  topology compiled on a CPU host, fdeblur.aot). The choice is made when a layer is traced."""
  previous = _TARGET_PLATFORM[0]
  _TARGET_PLATFORM[0] = platform
  try:
    yield
  finally:
    _TARGET_PLATFORM[0] = previous


def platform() -> str:
  """The platform convolutions are traced for (`target_platform`, else JAX's default backend)."""
  return _TARGET_PLATFORM[0] or jax.default_backend()


def _patches(x, kh, kw, strides, out_h, out_w):
  b, _, _, cin = x.shape
  sh, sw = strides
  return jnp.concatenate([
      lax.slice(x, (0, i, j, 0), (b, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, cin),
                (1, sh, sw, 1)) for i in range(kh) for j in range(kw)], axis=3)


def conv_im2col(x, kernel, strides, padding, *, precision=None, preferred_element_type=None):
  """lax.conv_general_dilated(x, kernel, strides, padding) (NHWC, HWIO, no dilation, one group)
  as one matrix product: the kh·kw·cin patch of every output pixel (im2col) times the kernel as
  a (kh·kw·cin, cout) matrix.

  Same products and parameters, summed in another order (float32 rounding apart, the same
  numbers). On XLA:CPU a matrix product runs ~2x faster than its convolution of the same FLOPs,
  and the convolution's weight gradient (a convolution over batch and image) slower still; here
  the forward and both gradients are matrix products.
  padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
  """
  kh, kw, cin, cout = kernel.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
  (lo_h, hi_h), (lo_w, hi_w) = padding
  out_h = _output_size(x.shape[1], kh, strides[0], lo_h, hi_h)
  out_w = _output_size(x.shape[2], kw, strides[1], lo_w, hi_w)

  # Rematerialised: the backward pass keeps x and the kernel (as XLA's convolution does) and
  # rebuilds the patches from x instead of keeping kh·kw copies of it (XLA drops the recomputed
  # product, whose value the gradients do not use).
  @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
  def conv(x, kernel):
    x = lax.pad(x, jnp.zeros((), x.dtype),
                ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
    return lax.dot_general(_patches(x, kh, kw, strides, out_h, out_w),
                           kernel.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                           precision=precision, preferred_element_type=preferred_element_type)

  return conv(x, kernel)


def _output_size(n: int, k: int, s: int, lo: int, hi: int) -> int:
  return (n + lo + hi - k) // s + 1


def conv_tap_matmul(x, kernel, strides, padding, *, precision=None, preferred_element_type=None):
  """lax.conv_general_dilated(x, kernel, strides, padding) (NHWC, HWIO, no dilation, one group)
  as one matrix product of every input pixel with the kh·kw taps' (cin, cout) matrices side by
  side, z = x · [w_00 ... w_(kh-1)(kw-1)] (cin × kh·kw·cout), then the sum over the taps of z's
  shifted (strided) output slices: y[a, b] = sum_ij z[s a + i, s b + j, tap ij].

  The counterpart of `conv_im2col` for few output channels (an image head, ngf -> 3): the kh·kw
  copies are of the narrow output side, not of the wide input (z has kh·kw·cout channels, 147
  for a 7x7 head to RGB), and nothing extra is kept for the backward pass (z is linear in x and
  the kernel; the gradients are the shifted slices' pads and two matrix products). Same products
  and parameters, summed in another order. padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
  """
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
  (lo_h, hi_h), (lo_w, hi_w) = padding
  out_h = _output_size(x.shape[1], kh, sh, lo_h, hi_h)
  out_w = _output_size(x.shape[2], kw, sw, lo_w, hi_w)
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
  z = lax.dot_general(x, kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout),
                      (((3,), (0,)), ((), ())), precision=precision,
                      preferred_element_type=preferred_element_type)
  return _tap_sum(z, (kh, kw), tuple(strides), (out_h, out_w))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _tap_sum(z, kernel_size, strides, out_size):
  """y[a, b] = sum_ij z[s a + i, s b + j, tap ij] (z: [B, H, W, kh·kw·cout], taps in (i, j)
  order), linear in z."""
  (kh, kw), (sh, sw), (out_h, out_w) = kernel_size, strides, out_size
  b, cout = z.shape[0], z.shape[3] // (kh * kw)
  y = None
  for i in range(kh):
    for j in range(kw):
      t = (i * kw + j) * cout
      tap = lax.slice(z, (0, i, j, t), (b, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1,
                                        t + cout), (1, sh, sw, 1))
      y = tap if y is None else y + tap
  return y


def _tap_sum_fwd(z, kernel_size, strides, out_size):
  return _tap_sum(z, kernel_size, strides, out_size), z.shape[1:3]


def _tap_sum_bwd(kernel_size, strides, out_size, z_size, ct):
  """dz[p, q, tap ij] = ct[(p - i) / s, (q - j) / s]: the im2col patches of ct, dilated by the
  stride and padded by the kernel (one concatenation; the transposes of the kh·kw slices would
  be kh·kw padded copies of z summed)."""
  (kh, kw), (sh, sw), (out_h, out_w), (h, w) = kernel_size, strides, out_size, z_size
  ct = lax.pad(ct, jnp.zeros((), ct.dtype),
               ((0, 0, 0), (kh - 1, h - sh * (out_h - 1) - 1, sh - 1),
                (kw - 1, w - sw * (out_w - 1) - 1, sw - 1), (0, 0, 0)))
  b, _, _, cout = ct.shape
  return (jnp.concatenate([lax.slice(ct, (0, kh - 1 - i, kw - 1 - j, 0),
                                     (b, kh - 1 - i + h, kw - 1 - j + w, cout))
                           for i in range(kh) for j in range(kw)], axis=3),)


_tap_sum.defvjp(_tap_sum_fwd, _tap_sum_bwd)


# Interpolation points of Winograd's F(m, 3) (the last one, infinity, is implicit): 1/2 and -2
# instead of the usual 2 and -2 keep F(4, 3)'s float32 error ~3x smaller (relative to the largest
# output, 5e-6 against 1.4e-5 at 256 channels; XLA's convolution: 5e-7).
_WINOGRAD_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, fractions.Fraction(1, 2), -2)}


@functools.cache
def winograd_matrices(m: int):
  """Cook–Toom matrices of Winograd's F(m, 3): AT (m × t), G (t × 3), BT (t × t), t = m + 2,
  such that AT [(G g) ⊙ (BT d)] is the correlation y[i] = sum_j d[i + j] g[j] (i < m) of a tile
  of t samples d with a 3-tap filter g (exact rational arithmetic, then float)."""
  points = [fractions.Fraction(p) for p in _WINOGRAD_POINTS[m]]

  def poly(roots):  # coefficients (lowest first) of prod_r (z - r)
    c = [fractions.Fraction(1)]
    for r in roots:
      c = [a - r * b for a, b in zip([0, *c], [*c, 0])]
    return c

  at = [[p ** i for p in points] + [int(i == m - 1)] for i in range(m)]
  g = [[p ** j / math.prod(p - q for q in points if q != p) for j in range(3)]
       for p in points] + [[0, 0, 1]]
  bt = [poly([q for q in points if q != p]) + [0] for p in points] + [poly(points)]
  return tuple(tuple(tuple(float(v) for v in row) for row in a) for a in (at, g, bt))


def _combine(coefficients, terms):
  """sum_i c_i terms_i over the nonzero c_i (the transforms' matrices are sparse)."""
  out = None
  for c, t in zip(coefficients, terms):
    if c:
      t = t if c == 1 else -t if c == -1 else t * c
      out = t if out is None else out + t
  return out if out is not None else jnp.zeros_like(terms[0])


def _every(x, axis, start, n, step):
  return lax.slice_in_dim(x, start, start + step * (n - 1) + 1, step, axis)


def _winograd_input(x, m, nh, nw):
  """x [B, nh·m + 2, nw·m + 2, C] -> V [t², B·nh·nw, C]: BT d BT^T of every t × t tile d (tiles
  at a stride of m, overlapping by 2), separably: rows, then columns."""
  bt = winograd_matrices(m)[2]
  t = m + 2
  rows = [_every(x, 1, i, nh, m) for i in range(t)]
  v = []
  for r in (_combine(bt[i], rows) for i in range(t)):
    cols = [_every(r, 2, j, nw, m) for j in range(t)]
    v += [_combine(bt[j], cols) for j in range(t)]
  return jnp.stack(v).reshape(t * t, -1, x.shape[3])


def _winograd_input_transpose(dv, m, b, nh, nw):
  """The transpose of `_winograd_input`: dV [t², B·nh·nw, C] -> dx [B, nh·m + 2, nw·m + 2, C],
  each tile's BT^T dV BT added where the tiles overlap."""
  bt = winograd_matrices(m)[2]
  t = m + 2
  dv = dv.reshape(t, t, b, nh, nw, dv.shape[2])
  rows = []
  for i in range(t):
    cols = [_combine([bt[j][k] for j in range(t)], list(dv[i])) for k in range(t)]
    rows.append(_overlap_add(cols, 2, m))
  return _overlap_add([_combine([bt[i][k] for i in range(t)], rows) for k in range(t)], 1, m)


def _overlap_add(parts, axis, m):
  """parts[k] (k < m + 2): values at positions a·m + k along `axis` for the tiles a < n; their
  sum at each of the n·m + 2 positions (k ≥ m lands in tile a + 1)."""
  phases = []
  for q in range(m):
    acc = None
    for shift in range((len(parts) - 1 - q) // m + 1):
      p = parts[q + m * shift]
      pads = [(0, 0, 0)] * p.ndim
      pads[axis] = (shift, 1 - shift, 0)
      p = lax.pad(p, jnp.zeros((), p.dtype), pads)
      acc = p if acc is None else acc + p
    phases.append(acc)
  y = jnp.stack(phases, axis=axis + 1)
  shape = list(phases[0].shape)
  shape[axis] *= m
  return lax.slice_in_dim(y.reshape(shape), 0, shape[axis] - m + 2, axis=axis)


def _winograd_kernel(m, dtype):
  """G ⊗ G as a (t², 9) matrix: U = (G ⊗ G) vec(w) is G w G^T for every (cin, cout)."""
  g = np.asarray(winograd_matrices(m)[1])
  return jnp.asarray(np.kron(g, g), dtype)


def _winograd_output(mm, m, b, nh, nw):
  """M [t², B·nh·nw, K] -> y [B, nh·m, nw·m, K]: AT M AT^T of every tile, side by side."""
  at = winograd_matrices(m)[0]
  t = m + 2
  mm = mm.reshape(t, t, b, nh, nw, mm.shape[2])
  r = [_combine(at[p], list(mm)) for p in range(m)]
  y = jnp.stack([jnp.stack([_combine(at[q], list(r[p])) for q in range(m)], axis=3)
                 for p in range(m)], axis=2)  # [B, nh, m, nw, m, K]
  return y.reshape(b, nh * m, nw * m, y.shape[5])


def _winograd_output_transpose(ct, m, nh, nw):
  """The transpose of `_winograd_output`: ct [B, nh·m, nw·m, K] -> dM [t², B·nh·nw, K]."""
  at = winograd_matrices(m)[0]
  t = m + 2
  tiles = [[_every(_every(ct, 1, p, nh, m), 2, q, nw, m) for q in range(m)] for p in range(m)]
  r = [[_combine([at[q][j] for q in range(m)], tiles[p]) for j in range(t)] for p in range(m)]
  dm = [_combine([at[p][i] for p in range(m)], [r[p][j] for p in range(m)])
        for i in range(t) for j in range(t)]
  return jnp.stack(dm).reshape(t * t, -1, ct.shape[3])


def _winograd_tiles(x, m):
  """(nh, nw, x zero-padded to nh·m + 2, nw·m + 2) for a VALID 3x3 convolution of x."""
  nh, nw = -(-(x.shape[1] - 2) // m), -(-(x.shape[2] - 2) // m)
  pads = ((0, 0, 0), (0, nh * m + 2 - x.shape[1], 0), (0, nw * m + 2 - x.shape[2], 0), (0, 0, 0))
  return nh, nw, lax.pad(x, jnp.zeros((), x.dtype), pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _winograd(x, kernel, m, precision, preferred_element_type):
  """VALID 3x3 stride-1 convolution (NHWC, HWIO) by Winograd F(m × m, 3 × 3)."""
  b, h, w = x.shape[0], x.shape[1] - 2, x.shape[2] - 2
  cin, cout = kernel.shape[2:]
  nh, nw, xp = _winograd_tiles(x, m)
  u = jnp.dot(_winograd_kernel(m, kernel.dtype), kernel.reshape(9, cin * cout),
              precision=precision)
  mm = lax.dot_general(_winograd_input(xp, m, nh, nw), u.reshape(-1, cin, cout),
                       (((2,), (1,)), ((0,), (0,))), precision=precision,
                       preferred_element_type=preferred_element_type)
  return _winograd_output(mm, m, b, nh, nw)[:, :h, :w]


def _winograd_fwd(x, kernel, m, precision, preferred_element_type):
  # Keeps x and the kernel, as XLA's convolution does, not the t²/m² times larger tiles.
  return _winograd(x, kernel, m, precision, preferred_element_type), (x, kernel)


def _winograd_bwd(m, precision, preferred_element_type, residuals, ct):
  """Both gradients in the transform domain: dM (the output transform's transpose of ct), per
  tile position the kernel's dU = V^T dM and the input's dV = dM U^T, then the kernel and input
  transforms' transposes (V is recomputed from x)."""
  del preferred_element_type
  x, kernel = residuals
  b, (h, w), (cin, cout) = x.shape[0], ct.shape[1:3], kernel.shape[2:]
  nh, nw, xp = _winograd_tiles(x, m)
  ct = lax.pad(ct, jnp.zeros((), ct.dtype),
               ((0, 0, 0), (0, nh * m - h, 0), (0, nw * m - w, 0), (0, 0, 0)))
  dm = _winograd_output_transpose(ct, m, nh, nw).astype(x.dtype)
  gk = _winograd_kernel(m, kernel.dtype)
  du = lax.dot_general(_winograd_input(xp, m, nh, nw), dm, (((1,), (1,)), ((0,), (0,))),
                       precision=precision)
  dkernel = jnp.dot(gk.T, du.reshape(-1, cin * cout), precision=precision)
  u = jnp.dot(gk, kernel.reshape(9, cin * cout), precision=precision)
  dv = lax.dot_general(dm, u.reshape(-1, cin, cout), (((2,), (2,)), ((0,), (0,))),
                       precision=precision)
  dx = _winograd_input_transpose(dv, m, b, nh, nw)[:, :x.shape[1], :x.shape[2]]
  return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def conv_winograd(x, kernel, strides, padding, *, tile=None, precision=None,
                  preferred_element_type=None):
  """lax.conv_general_dilated(x, kernel, strides, padding) for a 3x3 kernel at stride 1 (NHWC,
  HWIO, no dilation, one group) by Winograd's minimal filtering F(m × m, 3 × 3), m = tile
  (default WINOGRAD_TILE): every m × m output tile from the (m + 2)² input tile around it as
  AT [U ⊙ (BT d BT^T)] AT^T with U = G w G^T, the elementwise products summed over the input
  channels as (m + 2)² matrix products (B·tiles, cin) × (cin, cout).

  (m + 2)²/m² multiplications per output and channel pair instead of 9 (2.25 at m = 4), the
  transforms are sums of slices. Same parameters; float32 rounding differs more than the direct
  sum's (relative to the largest output ~5e-6 at m = 4, 256 channels; ~6e-7 at m = 2). The
  backward pass (custom VJP) keeps x and the kernel only and works in the transform domain:
  matrix products dU = V^T dM, dV = dM U^T and the transforms' transposes. Odd sizes are padded
  to whole tiles with zeros and cropped. padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
  """
  m = tile or WINOGRAD_TILE
  if kernel.shape[:2] != (3, 3) or tuple(strides) != (1, 1) or m not in _WINOGRAD_POINTS:
    raise ValueError(f"conv_winograd: a 3x3 kernel at stride 1 and tile 2 or 4, not kernel "
                     f"{kernel.shape[:2]}, strides {tuple(strides)}, tile {m}")
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (3, 3), (1, 1), padding)
  (lo_h, hi_h), (lo_w, hi_w) = padding
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0), (0, 0, 0)))
  return _winograd(x, kernel, m, precision, preferred_element_type)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None, **kwargs):
  """lax.conv_general_dilated (the `nnx.Conv` hook) for 2-D NHWC/HWIO convolutions without
  dilation or groups, by the formulation of the platform traced for (`platform()`): wide kernels
  (>= WIDE_KERNEL_MIN_SIZE) with few output channels by `conv_tap_matmul` on the
  WIDE_KERNEL_PLATFORMS; on the CPU, float32 3x3 stride-1 convolutions with cin·cout >=
  WINOGRAD_MIN_CHANNELS by `conv_winograd`, other wide channels (cin·cout >= IM2COL_MIN_CHANNELS)
  by `conv_im2col`; anything else goes to lax."""
  def plain_2d():
    if lhs.ndim != 4 or feature_group_count != 1 or kwargs.get("out_sharding") is not None:
      return False
    if any(d not in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation)):
      return False
    if isinstance(padding, str) and padding not in ("SAME", "VALID"):
      return False
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc

  form = None
  if plain_2d():
    kh, kw, cin, cout = rhs.shape
    target = platform()
    if (target in WIDE_KERNEL_PLATFORMS and min(kh, kw) >= WIDE_KERNEL_MIN_SIZE
        and cout <= WIDE_KERNEL_MAX_CHANNELS and cout < cin):
      form = conv_tap_matmul
    elif (target == "cpu" and (kh, kw) == (3, 3) and tuple(window_strides) == (1, 1)
          and cin * cout >= WINOGRAD_MIN_CHANNELS
          and lhs.dtype == rhs.dtype == jnp.float32):
      form = conv_winograd
    elif target == "cpu" and cin * cout >= IM2COL_MIN_CHANNELS:
      form = conv_im2col
  if form is not None:
    return form(lhs, rhs, tuple(window_strides), padding, precision=precision,
                preferred_element_type=preferred_element_type)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  preferred_element_type=preferred_element_type, **kwargs)


_XLA_CONVOLUTIONS = [False]


@contextlib.contextmanager
def xla_convolutions():
  """Layers built inside compute their convolutions as XLA's own ops (lax.conv_general_dilated,
  flax's input-dilated transposed convolution): fdeblur's formulation before the CPU rewrites, for
  benchmarks and equivalence tests. Parameters are the same either way."""
  _XLA_CONVOLUTIONS[0] = True
  try:
    yield
  finally:
    _XLA_CONVOLUTIONS[0] = False


def Conv(*args, **kwargs) -> nnx.Conv:
  """nnx.Conv whose products run in the computation dtype and accumulate into a float32 output,
  on the CPU the formulation `conv_general_dilated` picks for its shape (same parameters).

  A bfloat16 output would round each activation relative to its magnitude before the batch or
  instance norm that follows subtracts the mean (catastrophic cancellation where the mean is
  large against the spread); norms here compute in float32 and emit the computation dtype.
  """
  kwargs.setdefault("preferred_element_type", jnp.float32)
  if not _XLA_CONVOLUTIONS[0]:
    kwargs.setdefault("conv_general_dilated", conv_general_dilated)
  return nnx.Conv(*args, **kwargs)


def _conv_transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
  """lax.conv_transpose's padding of the dilated input for 'SAME' / 'VALID' (its formula)."""
  if padding == "SAME":
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  else:
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  return pad_a, pad_len - pad_a


def _subpixel_taps(k: int, s: int, lo: int, n: int, m: int):
  """One spatial axis of a transposed conv as a stride-1 conv whose outputs are the s phases.

  The transposed conv (flax/lax semantics: the input dilated by s, padded (lo, hi), correlated
  with the kernel w) gives y[j] = sum_k xd[j + k - lo] w[k], xd[s i] = x[i]. For the output
  phase q (j = s a + q) only the taps k = c + s u with c = (lo - q) mod s meet a sample:
  y[s a + q] = sum_u x[a + u + e] w[c + s u], e = (c + q - lo) / s. Over all phases the input
  offsets span t0..t1; returns (index[t - t0, q] = kernel tap or k (a zero tap), pad_lo, pad_hi
  of x for a VALID stride-1 conv giving ceil(m / s) positions per phase).
  """
  entries = []
  for q in range(s):
    c = (lo - q) % s
    e = (c + q - lo) // s
    entries += [(e + u, q, c + s * u) for u in range(-(-(k - c) // s))]
  t0 = min(t for t, _, _ in entries) if entries else 0
  t1 = max(t for t, _, _ in entries) if entries else 0
  index = np.full((t1 - t0 + 1, s), k, dtype=np.int32)
  for t, q, tap in entries:
    index[t - t0, q] = tap
  a = -(-m // s)  # positions per phase
  return index, -t0, (a - 1 + t1) - (n - 1)


def conv_transpose_subpixel(x, kernel, strides, padding, *, precision=None,
                            preferred_element_type=None):
  """lax.conv_transpose(x, kernel, strides, padding) (NHWC, HWIO, transpose_kernel=False, no
  kernel dilation) computed as one stride-1 convolution whose output channels are the
  stride × stride output phases, then depth-to-space ("sub-pixel").

  Same numbers and the same parameters as the dilated form: each output is the same sum of
  products, without the (s² - 1)/s² zeros of the dilated input, and its gradients are plain
  stride-1 convolutions, where XLA:CPU runs the dilated form's weight gradient as a slow generic
  loop (benchmarks/profile_step.py). padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)) of the
  dilated input, as lax.conv_transpose.
  """
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  n_h, n_w = x.shape[1:3]
  if isinstance(padding, str):
    padding = [_conv_transpose_pads(k, s, padding) for k, s in ((kh, sh), (kw, sw))]
  (lo_h, hi_h), (lo_w, hi_w) = padding
  m_h = (n_h - 1) * sh + 1 + lo_h + hi_h - kh + 1  # output size of the dilated form
  m_w = (n_w - 1) * sw + 1 + lo_w + hi_w - kw + 1
  idx_h, plo_h, phi_h = _subpixel_taps(kh, sh, lo_h, n_h, m_h)
  idx_w, plo_w, phi_w = _subpixel_taps(kw, sw, lo_w, n_w, m_w)
  # kernel[idx] with a zero row/column at index k: (Th, sh, Tw, sw, cin, cout)
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  k2 = padded[idx_h[:, :, None, None], idx_w[None, None, :, :]]
  k2 = k2.transpose(0, 2, 4, 1, 3, 5).reshape(idx_h.shape[0], idx_w.shape[0], cin, sh * sw * cout)
  y = conv_general_dilated(
      x, k2, (1, 1), ((plo_h, phi_h), (plo_w, phi_w)), dimension_numbers=_NHWC,
      precision=precision, preferred_element_type=preferred_element_type)
  b, a_h, a_w, _ = y.shape
  y = y.reshape(b, a_h, a_w, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, a_h * sh, a_w * sw, cout)[:, :m_h, :m_w]


class ConvTranspose(nnx.ConvTranspose):
  """nnx.ConvTranspose (same parameters) with a float32 output, as `Conv`, computed by
  `conv_transpose_subpixel` (2-D, explicit/'SAME'/'VALID' padding, no kernel dilation, mask or
  kernel transposition; anything else: nnx.ConvTranspose's own dilated form)."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("preferred_element_type", jnp.float32)
    super().__init__(*args, **kwargs)
    self.subpixel = not _XLA_CONVOLUTIONS[0]

  def __call__(self, inputs):
    plain = (self.subpixel and len(self.kernel_size) == 2 and inputs.ndim == 4
             and self.mask is None and not self.transpose_kernel
             and self.kernel_dilation in (None, 1, (1, 1))
             and (self.padding in ("SAME", "VALID") or not isinstance(self.padding, str)))
    if not plain:
      return super().__call__(inputs)
    strides = self.strides if self.strides is not None else 1
    strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
    padding = self.padding
    if not isinstance(padding, str):
      padding = nnx.nn.linear.canonicalize_padding(padding, 2)
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
    y = conv_transpose_subpixel(inputs, kernel, strides, padding, precision=self.precision,
                                preferred_element_type=self.preferred_element_type)
    if bias is not None:
      y = y + bias
    return y


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection padding of the spatial axes of an NHWC tensor (PyTorch's ReflectionPad2d)."""
  if pad == 0:
    return x
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def to_signed(images: jax.Array, dtype) -> jax.Array:
  """[0, 1] images -> [-1, 1] in the computation dtype."""
  return images.astype(dtype) * 2.0 - 1.0


def to_unit_interval(x: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1], float32, clipped to the image range."""
  return jnp.clip((x.astype(jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


def activation(name: str | None):
  """'relu', 'lrelu' (slope 0.2, as pix2pix/DeblurGAN discriminators), 'tanh' or None."""
  if name is None:
    return lambda x: x
  return {"relu": jax.nn.relu, "lrelu": lambda x: jax.nn.leaky_relu(x, 0.2),
          "tanh": jnp.tanh}[name]


def max_pool(x: jax.Array, factor: int = 2) -> jax.Array:
  return nnx.max_pool(x, (factor, factor), strides=(factor, factor))


def avg_pool(x: jax.Array, factor: int) -> jax.Array:
  if factor == 1:
    return x
  return nnx.avg_pool(x, (factor, factor), strides=(factor, factor))


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  if x.shape[1:3] == (height, width):
    return x
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear")


def zero_(variable: nnx.Variable) -> None:
  """Sets a variable to zeros in place (zero-initialised residual branches)."""
  variable[...] = jnp.zeros_like(variable[...])


def count_params(module: nnx.Module) -> int:
  """Number of trainable parameters; a module shared by two parents is counted once."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


class BatchNorm(nnx.BatchNorm):
  """Batch norm with PyTorch's/TF-slim's usual constants (momentum 0.9, eps 1e-5), computed in
  float32 whatever the computation dtype (its output is cast back to it).

  Normalising in bfloat16 rounds x before x - mean: where activations carry a large common
  offset (residual streams) that cancellation would cost most of the signal's precision.
  Running statistics are `nnx.BatchStat` (not Param): the train loop carries them as state;
  `model.train()` uses batch statistics, `model.eval()` the running averages.
  """

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    super().__init__(num_features, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)
    self.out_dtype = dtype

  def __call__(self, x, use_running_average=None, *, mask=None):
    if use_running_average is None:
      use_running_average = self.use_running_average
    if use_running_average:
      y = super().__call__(x, True, mask=mask)
    else:
      y = self._train_call(x, mask)
    return y.astype(self.out_dtype or x.dtype)

  def _train_call(self, x, mask):
    """nnx.BatchNorm's training branch, step for step, except that the running statistics are
    stored with `set_value` (no index). nnx stores them with `self.mean[...] = ...`, which on a
    traced value asks for the tracer's `sharding`; the AttributeError it catches builds a
    message that walks the whole trace so far (flax 0.12.8, jax 0.10.2), so tracing grows
    quadratically with the number of batch norms: 165 s -> 44 s to trace the paper's hourglass
    step (benchmarks/trace_time.py)."""
    feature_axes = flax_normalization._canonicalize_axes(x.ndim, self.axis)  # noqa: SLF001
    axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    x, mean, var, scale, bias = self.promote_dtype(
        (x, self.mean.get_value(), self.var.get_value(), self.scale.get_value(),
         self.bias.get_value()), dtype=self.dtype)
    batch_mean, batch_var = flax_normalization._compute_stats(  # noqa: SLF001
        x, axes, dtype=self.dtype, axis_name=self.axis_name,
        axis_index_groups=self.axis_index_groups, use_fast_variance=self.use_fast_variance,
        mask=mask)
    self.mean.set_value(self.momentum * mean + (1 - self.momentum) * batch_mean)
    self.var.set_value(self.momentum * var + (1 - self.momentum) * batch_var)
    return flax_normalization._normalize(x, batch_mean, batch_var, scale, bias, axes,  # noqa: SLF001
                                         feature_axes, self.dtype, self.epsilon)


def make_norm(kind: str | None, num_features: int, *, dtype=None, rngs: nnx.Rngs):
  """'instance' (no affine, as DeblurGAN), 'batch' (affine, running stats) or None."""
  if kind is None:
    return None
  if kind == "instance":
    return InstanceNorm(num_features, dtype=dtype, rngs=rngs)
  if kind == "batch":
    return BatchNorm(num_features, dtype=dtype, rngs=rngs)
  raise ValueError(f"unknown normalisation {kind!r} (instance, batch or None)")


def norm_act(y, norm, act: str | None, order: str = "norm_act"):
  """norm then activation ("norm_act"), or activation then norm ("act_norm"); norm may be None."""
  if order not in ("norm_act", "act_norm"):
    raise ValueError(f"order must be 'norm_act' or 'act_norm', not {order!r}")
  if order == "act_norm":
    y = activation(act)(y)
  if norm is not None:
    y = norm(y)
  return activation(act)(y) if order == "norm_act" else y


class InstanceNorm(nnx.Module):
  """Instance normalisation without affine parameters, as DeblurGAN uses it."""

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    # computed in float32 (see `BatchNorm`), emitted in the computation dtype
    self.norm = nnx.InstanceNorm(
        num_features, epsilon=1e-5, use_scale=False, use_bias=False, dtype=jnp.float32,
        rngs=rngs)
    self.out_dtype = dtype

  def __call__(self, x):
    return self.norm(x).astype(self.out_dtype or x.dtype)


class ConvNormAct(nnx.Module):
  """[reflect pad] -> conv -> norm -> activation (order="act_norm": conv -> act -> norm).

  padding: "SAME" (TensorFlow's, also for even kernels), an int (symmetric zero padding, as
  PyTorch's `padding=`), or None: reflect padding of `reflect` pixels if set, else (k-1)//2.
  Defaults are DeblurGAN's: instance norm, ReLU, conv bias.
  """

  def __init__(self, cin, cout, kernel_size, *, stride=1, reflect=0, padding=None,
               norm="instance", act="relu", order="norm_act", use_bias=True,
               kernel_init=normal_init, dtype=None, rngs):
    self.reflect = reflect
    self.act = act
    self.order = order
    if reflect:
      pad = "VALID"
    elif padding is None:
      pad = (((kernel_size - 1) // 2,) * 2,) * 2
    elif isinstance(padding, int):
      pad = ((padding, padding),) * 2
    else:
      pad = padding
    self.conv = Conv(cin, cout, (kernel_size, kernel_size), strides=stride, padding=pad,
                     use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
    self.norm = make_norm(norm, cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return norm_act(self.conv(reflect_pad(x, self.reflect)), self.norm, self.act, self.order)


class UpConvNormAct(nnx.Module):
  """Transposed conv -> norm -> activation.

  Default: DeblurGAN's 3x3 stride-2 transposed conv (PyTorch padding=1, output_padding=1,
  i.e. exactly doubles H, W) -> instance norm -> ReLU. padding="SAME" gives TensorFlow's
  `conv2d_transpose` geometry (output = input * stride) for any kernel size.
  """

  def __init__(self, cin, cout, *, kernel_size=3, stride=2, padding=None, norm="instance",
               act="relu", order="norm_act", use_bias=True, kernel_init=normal_init,
               dtype=None, rngs):
    if padding is None:  # ConvTranspose2d(k=3, s=2, p=1, output_padding=1)
      padding = ((1, 2), (1, 2))
    self.act = act
    self.order = order
    self.conv = ConvTranspose(cin, cout, (kernel_size, kernel_size), strides=(stride, stride),
                              padding=padding, use_bias=use_bias, kernel_init=kernel_init,
                              dtype=dtype, rngs=rngs)
    self.norm = make_norm(norm, cout, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return norm_act(self.conv(x), self.norm, self.act, self.order)


class ResnetBlock(nnx.Module):
  """DeblurGAN's residual block: pad-conv3-norm-ReLU-[dropout]-pad-conv3-norm, plus identity."""

  def __init__(self, dim, *, dropout=0.0, dtype=None, rngs):
    self.conv1 = Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                      dtype=dtype, rngs=rngs)
    self.norm1 = InstanceNorm(dim, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)  # its key comes with each call (no RNG in the state)
    self.conv2 = Conv(dim, dim, (3, 3), padding="VALID", kernel_init=normal_init,
                      dtype=dtype, rngs=rngs)
    self.norm2 = InstanceNorm(dim, dtype=dtype, rngs=rngs)

  def __call__(self, x, rngs=None):
    y = jax.nn.relu(self.norm1(self.conv1(reflect_pad(x, 1))))
    y = self.dropout(y, rngs=rngs)
    y = self.norm2(self.conv2(reflect_pad(y, 1)))
    return x + y
