"""Blur synthesis throughput: the jit-compiled, batched JAX path (`fdeblur.degrade`) against a plain
per-image NumPy/SciPy loop of the same algorithms, on this machine, in one run.

    python benchmarks/degrade.py [--batch 64] [--sizes 64,128,256] [--crossover]

Prints a markdown table: kernels/s (trajectory generation) and images/s (applying kernels: direct
and FFT; and the whole trajectory blur, kernel generation included) with the JAX/NumPy ratio.
The NumPy reference: the Boracchi & Foi random walk as a Python loop over the 2000 steps (the
reference implementations' structure: each step depends on the previous one), the PSF by a
vectorised bilinear `np.add.at`, and per-image, per-channel `scipy.signal.convolve2d` (direct) or
`scipy.signal.fftconvolve` (FFT) on reflect-padded images. Timings are medians of repeated calls
after a warm-up (compilation excluded); the machine may be shared, so compare within one run.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from scipy import signal  # noqa: E402

from fdeblur import config_lib, degrade  # noqa: E402
from fdeblur.degrade import apply, kernels  # noqa: E402

ANXIETY = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003, 0.002, 0.001)
FRACTIONS = (1 / 1000, 1 / 10, 1 / 2, 1.0)


# ------------------------------------------------------------------------------------------------
# The NumPy reference (per image).


def np_trajectory(rng, iters=2000, max_len=60.0):
  expl = rng.choice(ANXIETY)
  centripetal, prob_big_shake = 0.7 * rng.uniform(), 0.2 * rng.uniform()
  gaussian_shake, init_angle = 10 * rng.uniform(), 360 * rng.uniform()
  step = max_len / (iters - 1)
  v = np.exp(1j * np.deg2rad(init_angle)) * (expl if expl > 0 else step)
  x = np.zeros(iters, np.complex128)
  for t in range(iters - 1):
    impulse = 0.0
    if rng.uniform() < prob_big_shake * expl:
      impulse = 2 * v * np.exp(1j * (np.pi + rng.uniform() - 0.5))
    dv = impulse + expl * (gaussian_shake * complex(rng.standard_normal(), rng.standard_normal())
                           - centripetal * x[t]) * step
    v = v + dv
    v = v / abs(v) * step
    x[t + 1] = x[t] + v
  return x


def np_psf(x, fraction, size=65):
  n = len(x)
  w = np.clip(fraction * n - np.arange(n), 0.0, 1.0)
  exposed = x[w > 0]
  c = complex((exposed.real.min() + exposed.real.max()) / 2,
              (exposed.imag.min() + exposed.imag.max()) / 2)
  p = x - x[0] - complex(np.round((c - x[0]).real), np.round((c - x[0]).imag)) + complex(
      size // 2, size // 2)
  p, w = p[w > 0], w[w > 0]  # the exposed samples (the others may lie off the support)
  c0, r0 = np.floor(p.real).astype(int), np.floor(p.imag).astype(int)
  fx, fy = p.real - c0, p.imag - r0
  psf = np.zeros((size + 2, size + 2))
  for dr, dc, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy),
                     (1, 1, fx * fy)):
    np.add.at(psf, (r0 + dr, c0 + dc), w * wt)
  psf = psf[:size, :size]
  return psf / psf.sum()


def np_trajectory_kernel(rng):
  return np_psf(np_trajectory(rng), FRACTIONS[rng.integers(4)])


def np_convolve(img, k, fft):
  p = k.shape[0] // 2
  out = np.empty_like(img)
  for c in range(img.shape[-1]):
    padded = np.pad(img[..., c], p, mode="reflect")
    out[..., c] = (signal.fftconvolve(padded, k, mode="valid") if fft else
                   signal.convolve2d(padded, k, mode="valid"))
  return out


# ------------------------------------------------------------------------------------------------
# Timing.


def _time(fn, min_time=1.0, max_reps=20, min_reps=2):
  fn()  # warm-up (compilation)
  times = []
  start = time.perf_counter()
  while len(times) < min_reps or (time.perf_counter() - start < min_time and
                                  len(times) < max_reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def _jax(fn, *args):
  return lambda: jax.block_until_ready(fn(*args))


def _traj_cfg():
  cfg = config_lib.base_config().blur
  cfg.update(trajectory_prob=1.0, gaussian_prob=0.0, motion_prob=0.0)
  return cfg


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_integer("batch", 64, "Images per JAX batch.")
  flags.DEFINE_string("sizes", "64,128,256", "Comma-separated image sizes.")
  flags.DEFINE_integer("numpy_images", 4, "Images per NumPy timing.")
  flags.DEFINE_bool("crossover", False, "Also time direct vs FFT over kernel sizes at 128^2.")


def main(argv):
  del argv
  args = flags.FLAGS
  b = args.batch
  sizes = [int(s) for s in args.sizes.split(",")]
  rng = np.random.default_rng(0)
  rows = []

  def row(stage, size, kernel, unit, jax_s, jax_n, np_s, np_n):
    j, n = jax_n / jax_s, np_n / np_s
    rows.append(f"| {stage} | {size} | {kernel} | {unit} | {j:,.1f} | {n:,.1f} | {j / n:,.1f}x |")
    print(rows[-1], flush=True)

  header = ["| stage | image | kernel | unit | JAX (batch {}) | NumPy/SciPy loop | ratio |".format(b),
            "|---|---|---|---|---|---|---|"]
  print("\n".join(header), flush=True)

  # Trajectory kernels (canvas 64 -> 65 support, 2000 steps, max_len 60).
  cfg = _traj_cfg()
  keys = jax.random.split(jax.random.key(0), b)
  gen = jax.jit(lambda k: kernels.random_trajectory_kernels(k, cfg))
  jt = _time(_jax(gen, keys))
  n_np = max(2, args.numpy_images)
  nt = _time(lambda: [np_trajectory_kernel(rng) for _ in range(n_np)], min_time=0.5, max_reps=3)
  row("trajectory kernels", "-", "65 (canvas 64)", "kernels/s", jt, b, nt, n_np)
  kernels65 = np.asarray(gen(keys))
  g = np.arange(15) - 7.0
  k15 = np.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * 2.0**2))
  kernels15 = np.broadcast_to(k15 / k15.sum(), (b, 15, 15)).astype(np.float32)

  for size in sizes:
    imgs = rng.uniform(size=(b, size, size, 3)).astype(np.float32)
    x = jnp.asarray(imgs)
    n_img = args.numpy_images
    for ksize, ker in ((15, kernels15), (65, kernels65)):
      kj = jnp.asarray(ker)
      for method in ("direct", "fft"):
        if method == "direct" and ksize == 65 and size > sizes[0]:
          continue  # O(K^2) per pixel: shown once, at the smallest size
        jt = _time(_jax(lambda i, k, m=method: apply.convolve(i, k, method=m), x, kj))
        nt = _time(lambda m=method: [np_convolve(imgs[i].astype(np.float64),
                                                  ker[i].astype(np.float64), m == "fft")
                                     for i in range(n_img)], min_time=0.3, max_reps=3,
                   min_reps=1)
        row(f"apply kernel ({method})", f"{size}^2", str(ksize), "images/s", jt, b, nt, n_img)
    # The whole trajectory blur: kernel generation + convolution (FFT, chosen by kernel size).
    blur = jax.jit(lambda k, s: degrade.degrade(k, s, cfg)[0])
    jt = _time(_jax(blur, keys, x))
    nt = _time(lambda: [np_convolve(imgs[i].astype(np.float64), np_trajectory_kernel(rng), True)
                        for i in range(n_np)], min_time=0.5, max_reps=3)
    row("trajectory blur (kernel + FFT)", f"{size}^2", "65", "images/s", jt, b, nt, n_np)

  print("\n" + "\n".join(header + rows))
  print(f"\njax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores")

  if args.crossover:
    print("\n| kernel | direct images/s | FFT images/s | (128^2, batch {}) |\n|---|---|---|---|"
          .format(b))
    x = jnp.asarray(rng.uniform(size=(b, 128, 128, 3)).astype(np.float32))
    for ksize in (7, 11, 15, 21, 31, 45):
      kj = jnp.full((b, ksize, ksize), 1.0 / ksize**2, jnp.float32)
      d = _time(_jax(lambda i, k: apply.convolve(i, k, method="direct"), x, kj), 0.5)
      f = _time(_jax(lambda i, k: apply.convolve(i, k, method="fft"), x, kj), 0.5)
      print(f"| {ksize} | {b / d:,.1f} | {b / f:,.1f} | |", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
