"""Blur kernels on the device: Gaussian (isotropic, anisotropic), linear motion, and random
camera-shake trajectories after Boracchi & Foi (2012) as DeblurGAN uses them.

All kernels are [B, K, K] float32 arrays on a centred odd support (the middle pixel is the origin),
non-negative and summing to 1. Randomness is per sample (one key each) and every shape is static,
so a jit-compiled step compiles once.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# Protocol ids shared with `fdeblur.degrade`: the first three are kernel families.
PROTOCOLS = ("gaussian", "motion", "trajectory", "pravg", "vla")
KERNEL_PROTOCOLS = PROTOCOLS[:3]


def frozen(cfg: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """A hashable copy of `config.blur`, for use as a static jit argument."""
  if isinstance(cfg, ml_collections.FrozenConfigDict):
    return cfg
  return ml_collections.FrozenConfigDict(cfg)


def _grid(kernel_size: int) -> jax.Array:
  """Pixel coordinates of a kernel's support, centred on its middle pixel."""
  return jnp.arange(kernel_size, dtype=jnp.float32) - (kernel_size - 1) / 2.0


@functools.partial(jax.jit, static_argnames=("kernel_size",))
def gaussian_kernels(sigma: jax.Array, kernel_size: int, sigma_y: jax.Array | None = None,
                     angle_deg: jax.Array | None = None) -> jax.Array:
  """Gaussians truncated to the support and normalised. sigma: [B] pixels -> [B, K, K].

  Isotropic when `sigma_y` is None; otherwise anisotropic with standard deviation `sigma` along
  the direction `angle_deg` (counter-clockwise from the +x axis as seen on screen, rows pointing
  down) and `sigma_y` across it.
  """
  g = _grid(kernel_size)
  ys, xs = g[:, None], g[None, :]
  if sigma_y is None:
    r2 = (xs**2 + ys**2)[None] / sigma[:, None, None] ** 2
  else:
    theta = jnp.deg2rad(jnp.zeros_like(sigma) if angle_deg is None else angle_deg)
    c, s = jnp.cos(theta)[:, None, None], jnp.sin(theta)[:, None, None]
    along = xs * c - ys * s  # direction (cos, -sin) in (x, y): y axis points down
    across = xs * s + ys * c
    r2 = (along / sigma[:, None, None]) ** 2 + (across / sigma_y[:, None, None]) ** 2
  k = jnp.exp(-0.5 * r2)
  return k / k.sum(axis=(1, 2), keepdims=True)


@functools.partial(jax.jit, static_argnames=("kernel_size", "method"))
def splat(points: jax.Array, weights: jax.Array, kernel_size: int,
          method: str = "auto") -> jax.Array:
  """Bilinear splatting of weighted sub-pixel points into a PSF.

  points: [B, M, 2] as (x, y) offsets from the kernel centre in pixels; weights: [B, M].
  Returns [B, K, K] normalised to sum 1 (points outside the support are dropped). Each point adds
  w (1 - |dx|)(1 - |dy|) to the (up to) four pixels around it. method "matmul": a batched matrix
  product of the triangle weights (dense, deterministic, fast on accelerators); "scatter": a
  scatter-add of the four corners (M K^2 / 4 times less work, the fast path on CPU, where it is
  deterministic); "auto": scatter on CPU, matmul elsewhere. Both give the same PSF.
  """
  if method == "auto":
    method = splat_method()
  if method == "matmul":
    g = _grid(kernel_size)
    wx = jnp.maximum(0.0, 1.0 - jnp.abs(g[None, None, :] - points[..., 0:1]))  # [B, M, K]
    wy = jnp.maximum(0.0, 1.0 - jnp.abs(g[None, None, :] - points[..., 1:2]))
    k = jnp.einsum("bmi,bmj,bm->bij", wy, wx, weights, precision=jax.lax.Precision.HIGHEST)
  elif method == "scatter":
    b, m = weights.shape
    pos = points + (kernel_size - 1) / 2.0  # pixel coordinates
    lo = jnp.floor(pos)
    frac = pos - lo
    lo = lo.astype(jnp.int32)
    idx, val = [], []
    for dy in (0, 1):
      for dx in (0, 1):
        ix, iy = lo[..., 0] + dx, lo[..., 1] + dy
        wgt = (frac[..., 0] if dx else 1.0 - frac[..., 0]) * (frac[..., 1] if dy else
                                                              1.0 - frac[..., 1])
        inside = (ix >= 0) & (ix < kernel_size) & (iy >= 0) & (iy < kernel_size)
        flat = jnp.arange(b)[:, None] * kernel_size**2 + iy * kernel_size + ix
        idx.append(jnp.where(inside, flat, b * kernel_size**2))  # out of range: dropped
        val.append(wgt * weights)
    k = jnp.zeros((b * kernel_size**2,), jnp.float32).at[jnp.stack(idx).ravel()].add(
        jnp.stack(val).ravel().astype(jnp.float32), mode="drop")
    k = k.reshape(b, kernel_size, kernel_size)
  else:
    raise ValueError(f"splat method must be 'auto', 'matmul' or 'scatter', got {method!r}")
  k = jnp.maximum(k, 0.0)
  return k / jnp.maximum(k.sum(axis=(1, 2), keepdims=True), 1e-12)


def splat_method(platform: str | None = None) -> str:
  """`splat`'s method for a platform (default: JAX's default backend): scatter on CPU, matmul
  on accelerators."""
  return "scatter" if (platform or jax.default_backend()) == "cpu" else "matmul"


@functools.partial(jax.jit, static_argnames=("kernel_size", "num_points", "method"))
def motion_kernels(length: jax.Array, angle_deg: jax.Array, kernel_size: int,
                   num_points: int | None = None, method: str = "auto") -> jax.Array:
  """Anti-aliased linear motion: a uniformly exposed segment of `length` pixels at `angle_deg`.

  The segment is sampled densely (sub-pixel) and splatted bilinearly, so fractional lengths and any
  angle give a smooth, exactly normalised PSF. length, angle_deg: [B] -> [B, K, K].
  """
  m = num_points or 8 * kernel_size
  t = (jnp.arange(m, dtype=jnp.float32) + 0.5) / m - 0.5  # in (-1/2, 1/2)
  theta = jnp.deg2rad(angle_deg)
  d = jnp.stack([jnp.cos(theta), -jnp.sin(theta)], axis=-1)  # image y axis points down
  pts = length[:, None, None] * t[None, :, None] * d[:, None, :]
  return splat(pts, jnp.ones(pts.shape[:2]), kernel_size, method)


# ------------------------------------------------------------------------------------------------
# Random camera-shake trajectories (Boracchi & Foi 2012; DeblurGAN's `Trajectory` and `PSF`).


def trajectory_support(cfg: ml_collections.ConfigDict) -> int:
  """Odd support of trajectory PSFs: the reference canvas (64), made odd (65) so the PSF has a
  middle pixel and the blur does not shift the image by half a pixel."""
  canvas = int(cfg.trajectory_canvas)
  return canvas + 1 - canvas % 2


def kernel_support(cfg: ml_collections.ConfigDict) -> int:
  """The static size K of every kernel a config draws: `kernel_size`, or the trajectory support
  when trajectories are in the mixture and larger."""
  ksize = int(cfg.kernel_size)
  if ksize % 2 != 1:
    raise ValueError(f"config.blur.kernel_size must be odd, got {ksize}")
  if cfg.trajectory_prob > 0:
    return max(ksize, trajectory_support(cfg))
  return ksize


def _index(u: jax.Array, n: int) -> jax.Array:
  """U in [0, 1) -> uniform integer in [0, n)."""
  return jnp.minimum((u * n).astype(jnp.int32), n - 1)


def _categorical(u: jax.Array, cum: jax.Array) -> jax.Array:
  """U in [0, 1) -> category by inverse CDF (cum: cumulative probabilities, last = 1)."""
  return jnp.minimum(jnp.sum(u >= cum), cum.shape[0] - 1).astype(jnp.int32)


def trajectory_draws(keys: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
  """See `_trajectory_draws` (jit-compiled per config and batch size)."""
  return _trajectory_draws(keys, frozen(cfg))


@functools.partial(jax.jit, static_argnums=1)
def _trajectory_draws(keys: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
  """Every random number one trajectory PSF needs, drawn up front from each sample's key.

  Per trajectory (as the reference): anxiety `expl` from `cfg.trajectory_anxiety`, centripetal
  0.7 U, prob_big_shake 0.2 U, gaussian_shake 10 U, init_angle 360 U degrees; per step: the
  big-shake test U, the impulse angle U and a complex normal. Also the exposure fraction index.
  Splitting draws from dynamics lets tests feed the same draws to a NumPy reference.
  """
  steps = int(cfg.trajectory_iters) - 1
  anxiety = jnp.asarray(cfg.trajectory_anxiety, jnp.float32)
  fprobs = np.asarray(cfg.trajectory_fraction_probs, np.float64)
  if len(fprobs) != len(cfg.trajectory_fractions):
    raise ValueError("config.blur.trajectory_fraction_probs must have one entry per fraction")
  fprobs = jnp.asarray(fprobs / fprobs.sum(), jnp.float32)

  cum_f = jnp.cumsum(fprobs)

  def one(key):
    # One draw per trajectory (each random call site costs compile time): rows 0-1 hold the
    # per-trajectory numbers, then per step (u_shake, u_angle, u1, u2); normals by Box-Muller.
    u = jax.random.uniform(key, (steps + 2, 4))
    head, step_u = u[:2].reshape(8), u[2:]
    radius = jnp.sqrt(-2.0 * jnp.log1p(-step_u[:, 2]))  # 1 - U in (0, 1]
    angle = 2.0 * jnp.pi * step_u[:, 3]
    return {
        "expl": anxiety[_index(head[4], anxiety.shape[0])],
        "centripetal": 0.7 * head[0],
        "prob_big_shake": 0.2 * head[1],
        "gaussian_shake": 10.0 * head[2],
        "init_angle": 360.0 * head[3],
        "u_shake": step_u[:, 0],
        "u_angle": step_u[:, 1],
        "normal": jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1),
        "fraction_index": _categorical(head[5], cum_f),
        "extent_u": head[6],  # trajectory_extent: where in (lo, hi) the exposed extent lands
    }

  return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("max_len", "unroll"))
def trajectory_paths(draws: dict, max_len: float, unroll: int = 1) -> jax.Array:
  """Particle positions [B, N, 2] as (x, y), x_0 = 0, N = len(u_shake) + 1.

  The inertial random walk of Boracchi & Foi with `jax.lax.scan` over the N - 1 steps (the batch
  is inside the carry). Each step: with probability prob_big_shake * expl an impulse
  2 v e^{i(pi + U - 1/2)}; dv = impulse + expl (gaussian_shake (n1 + i n2) - centripetal x_t)
  max_len / (N - 1); v += dv, rescaled to length max_len / (N - 1); x_{t+1} = x_t + v. The path
  length is therefore exactly max_len.
  """
  steps = draws["u_shake"].shape[-1]
  step = max_len / steps
  expl = draws["expl"][:, None]
  theta = jnp.deg2rad(draws["init_angle"])
  v0 = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
  v = jnp.where(expl > 0, v0 * expl, v0 * step)
  threshold = draws["prob_big_shake"] * draws["expl"]
  gs = draws["gaussian_shake"][:, None]
  cp = draws["centripetal"][:, None]

  def body(carry, inp):
    x, v = carry
    u_shake, u_angle, n = inp
    phi = jnp.pi + u_angle - 0.5
    c, s = jnp.cos(phi), jnp.sin(phi)
    impulse = 2.0 * jnp.stack([v[:, 0] * c - v[:, 1] * s, v[:, 0] * s + v[:, 1] * c], axis=-1)
    impulse = jnp.where((u_shake < threshold)[:, None], impulse, 0.0)
    v = v + impulse + expl * (gs * n - cp * x) * step
    speed = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    v = v / jnp.maximum(speed, 1e-30) * step
    x = x + v
    return (x, v), x

  x0 = jnp.zeros_like(v)
  inputs = (draws["u_shake"].T, draws["u_angle"].T, jnp.swapaxes(draws["normal"], 0, 1))
  _, xs = jax.lax.scan(body, (x0, v), inputs, unroll=unroll)
  return jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def exposure_weights(fraction: jax.Array, num_samples: int) -> jax.Array:
  """Per-sample exposure weights [B, N] of the cumulative PSF for exposure `fraction` [B].

  Sample i covers the interval [i, i + 1] of the exposure [0, N]; its weight is how much of that
  interval lies inside [0, fraction N] (the reference's interval weights, 0-based, so the first
  sample has weight 1 and not 0). Summing the reference's per-fraction intervals up to a fraction
  gives exactly this, so PSF_j is cumulative over fractions.
  """
  i = jnp.arange(num_samples, dtype=jnp.float32)
  return jnp.clip(fraction[:, None] * num_samples - i[None, :], 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("centre",))
def centre_paths(paths: jax.Array, weights: jax.Array, centre: str = "exposure") -> jax.Array:
  """Offsets from the kernel centre: x_0 lands on a whole pixel (the reference removes x_0's
  fractional part) and the bounding box's centre within half a pixel of the middle pixel.

  centre="trajectory" centres the whole path's box (the reference); "exposure" centres the box of
  the exposed samples (weight > 0), so a short exposure is a small blur at the centre rather than a
  translation by up to half the canvas.
  """
  if centre == "trajectory":
    mask = jnp.ones(paths.shape[:2], bool)
  elif centre == "exposure":
    mask = weights > 0
  else:
    raise ValueError(f"config.blur.trajectory_center must be 'exposure' or 'trajectory', "
                     f"got {centre!r}")
  lo = jnp.min(jnp.where(mask[..., None], paths, jnp.inf), axis=1)
  hi = jnp.max(jnp.where(mask[..., None], paths, -jnp.inf), axis=1)
  x0 = paths[:, 0]
  shift = -x0 - jnp.round((lo + hi) / 2 - x0)
  return paths + shift[:, None, :]


def path_extent(paths: jax.Array, weights: jax.Array) -> jax.Array:
  """Longer side [B] of the bounding box of the exposed samples (weight > 0) of paths [B, N, 2]."""
  mask = (weights > 0)[..., None]
  lo = jnp.min(jnp.where(mask, paths, jnp.inf), axis=1)
  hi = jnp.max(jnp.where(mask, paths, -jnp.inf), axis=1)
  return jnp.max(hi - lo, axis=-1)


def rescale_extent(paths: jax.Array, weights: jax.Array, extent: jax.Array) -> jax.Array:
  """Paths scaled about x_0 so that the exposed part's `path_extent` is `extent` [B] pixels."""
  scale = extent / jnp.maximum(path_extent(paths, weights), 1e-6)
  return (paths - paths[:, :1]) * scale[:, None, None] + paths[:, :1]


def trajectory_kernels(draws: dict, cfg: ml_collections.ConfigDict,
                       kernel_size: int | None = None, method: str = "auto"):
  """See `_trajectory_kernels` (jit-compiled per config, kernel size and batch size)."""
  return _trajectory_kernels(draws, frozen(cfg), kernel_size, method)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _trajectory_kernels(draws: dict, cfg: ml_collections.ConfigDict,
                        kernel_size: int | None = None, method: str = "auto"):
  """PSFs [B, K, K] of the drawn trajectories at each sample's exposure fraction.
  Returns (kernels, paths [B, N, 2] centred, fraction [B])."""
  kernel_size = kernel_size or trajectory_support(cfg)
  paths = trajectory_paths(draws, float(cfg.trajectory_max_len))
  fractions = jnp.asarray(cfg.trajectory_fractions, jnp.float32)
  fraction = fractions[draws["fraction_index"]]
  w = exposure_weights(fraction, paths.shape[1])
  lo, hi = (float(e) for e in cfg.trajectory_extent)
  if not 0 <= lo <= hi <= kernel_size - 3:
    raise ValueError(f"config.blur.trajectory_extent must satisfy 0 <= lo <= hi <= {kernel_size - 3}"
                     f" (the PSF support {kernel_size} less 3), got {(lo, hi)}")
  if hi > 0:
    paths = rescale_extent(paths, w, lo + (hi - lo) * draws["extent_u"])
  centred = centre_paths(paths, w, cfg.trajectory_center)
  return splat(centred, w, kernel_size, method), centred, fraction


def random_trajectory_kernels(keys: jax.Array, cfg: ml_collections.ConfigDict,
                              kernel_size: int | None = None, method: str = "auto") -> jax.Array:
  """keys: [B] -> [B, K, K] random camera-shake PSFs (`method`: splat's)."""
  return trajectory_kernels(trajectory_draws(keys, cfg), cfg, kernel_size, method)[0]


# ------------------------------------------------------------------------------------------------
# The kernel mixture.


def _between(u, bounds):
  lo, hi = bounds
  return lo + (hi - lo) * u


def _embed(kernels: jax.Array, size: int) -> jax.Array:
  """Zero-pads centred [B, k, k] kernels to [B, size, size] (size >= k, both odd)."""
  p = (size - kernels.shape[-1]) // 2
  return jnp.pad(kernels, ((0, 0), (p, p), (p, p))) if p else kernels


def kernel_probs(cfg: ml_collections.ConfigDict) -> np.ndarray:
  """Static probabilities of the kernel families (gaussian, motion, trajectory), unnormalised."""
  return np.array([cfg.gaussian_prob, cfg.motion_prob, cfg.trajectory_prob],
                  np.float64)


def kernels_for(keys: jax.Array, proto: jax.Array, cfg: ml_collections.ConfigDict,
                platform: str | None = None) -> jax.Array:
  """The kernel of family `proto` [B] (0 gaussian, 1 motion, 2 trajectory; anything else gets a
  delta) for each sample's key. [B, K, K] with K = kernel_support(cfg). Families whose
  probability is 0 are not computed. platform: the one the program is compiled for (default:
  JAX's default backend); it picks how PSFs are splatted (`splat_method`)."""
  method = splat_method(platform)
  size = kernel_support(cfg)
  ksize = int(cfg.kernel_size)
  probs = kernel_probs(cfg)
  batch = keys.shape[0]
  k_scalar, k_traj = jax.vmap(jax.random.split, out_axes=1)(keys)
  u = jax.vmap(lambda k: jax.random.uniform(k, (6,)))(k_scalar)  # [B, 6]
  delta = jnp.zeros((batch, size, size), jnp.float32).at[:, size // 2, size // 2].set(1.0)
  out = delta
  if probs[0] > 0:
    sx = _between(u[:, 0], cfg.gaussian_sigma)
    sy = jnp.where(u[:, 3] < cfg.gaussian_anisotropic_prob,
                   _between(u[:, 1], cfg.gaussian_sigma), sx)
    angle = _between(u[:, 2], cfg.gaussian_angle)
    g = gaussian_kernels(sx, ksize, sy, angle)
    out = jnp.where((proto == 0)[:, None, None], _embed(g, size), out)
  if probs[1] > 0:
    length = jnp.minimum(_between(u[:, 4], cfg.motion_length), float(ksize - 1))
    m = motion_kernels(length, _between(u[:, 5], cfg.motion_angle), ksize, method=method)
    out = jnp.where((proto == 1)[:, None, None], _embed(m, size), out)
  if probs[2] > 0:
    traj = random_trajectory_kernels(k_traj, cfg, size, method)
    out = jnp.where((proto == 2)[:, None, None], traj, out)
  return out


def protocol_from_uniform(u: jax.Array, probs: np.ndarray) -> jax.Array:
  """U [B] in [0, 1) -> protocol index by inverse CDF of static (unnormalised) probabilities;
  zero-probability protocols are never drawn."""
  probs = np.asarray(probs, np.float64)
  if probs.sum() <= 0 or (probs < 0).any():
    raise ValueError(f"blur protocol probabilities must be >= 0 with a positive sum, got {probs}")
  cum = np.cumsum(probs / probs.sum())
  cum[int(np.nonzero(probs > 0)[0][-1]):] = 1.0  # nothing after the last positive entry
  # Category i covers [cum[i-1], cum[i]): empty (never drawn) when probs[i] == 0.
  return jnp.sum(u[:, None] >= jnp.asarray(cum[:-1], jnp.float32)[None], axis=1).astype(jnp.int32)
