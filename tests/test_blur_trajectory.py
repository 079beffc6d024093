"""Camera-shake trajectories against a plain float64 NumPy reference of Boracchi & Foi (2012) as
DeblurGAN implements it (written here from the algorithm, without the Python port's bugs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fdeblur import config_lib
from fdeblur.degrade import kernels

ITERS = 2000
MAX_LEN = 60.0
ANXIETY = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003, 0.002, 0.001)


def _cfg(**kw):
  c = config_lib.base_config().blur
  c.update(dict(trajectory_prob=1.0, gaussian_prob=0.0, motion_prob=0.0), **kw)
  return c


def np_walk(expl, centripetal, prob_big_shake, gaussian_shake, init_angle, u_shake, u_angle,
            normal, max_len=MAX_LEN):
  """The reference random walk, vectorised over trajectories (leading axis), complex float64.
  Per-step randomness is passed in: u_shake, u_angle [B, N-1], normal [B, N-1, 2]."""
  steps = u_shake.shape[1]
  step = max_len / steps
  v0 = np.exp(1j * np.deg2rad(init_angle))
  v = np.where(expl > 0, v0 * expl, v0 * step)
  x = np.zeros(len(expl), np.complex128)
  xs = [x]
  big_count = np.zeros(len(expl), int)
  for t in range(steps):
    big = u_shake[:, t] < prob_big_shake * expl
    big_count += big
    impulse = np.where(big, 2 * v * np.exp(1j * (np.pi + u_angle[:, t] - 0.5)), 0)
    dv = impulse + expl * (gaussian_shake * (normal[:, t, 0] + 1j * normal[:, t, 1])
                           - centripetal * x) * step
    v = v + dv
    v = v / np.abs(v) * step
    x = x + v
    xs.append(x)
  return np.stack(xs, axis=1), big_count


def np_random_walks(rng, n, iters=ITERS, max_len=MAX_LEN):
  """Independent draws as the reference makes them (NumPy's generator, not JAX's)."""
  return np_walk(expl=rng.choice(ANXIETY, n), centripetal=0.7 * rng.uniform(size=n),
                 prob_big_shake=0.2 * rng.uniform(size=n), gaussian_shake=10 * rng.uniform(size=n),
                 init_angle=360 * rng.uniform(size=n), u_shake=rng.uniform(size=(n, iters - 1)),
                 u_angle=rng.uniform(size=(n, iters - 1)),
                 normal=rng.standard_normal((n, iters - 1, 2)), max_len=max_len)[0]


def np_psf(x, fraction_index, fractions, canvas):
  """The reference PSF of one trajectory x (complex [N]): centred as the reference does (whole
  path, 1-based canvas shifted to 0-based), interval weights summed over fractions up to
  `fraction_index` (cumulative), bilinear splat into 4 pixels, normalised to sum 1."""
  n = len(x)
  x = x - complex(x.real.min(), x.imag.min())
  x = x - complex(x[0].real % 1.0, x[0].imag % 1.0) + complex(1, 1)
  x = x + complex(np.ceil((canvas - x.real.max()) / 2), np.ceil((canvas - x.imag.max()) / 2))
  x = x - complex(1, 1)  # MATLAB's 1-based pixel coordinates -> 0-based
  psf = np.zeros((canvas + 2, canvas + 2))
  for j in range(fraction_index + 1):
    prev = 0.0 if j == 0 else fractions[j - 1]
    hi, lo = fractions[j] * n, prev * n
    for t in range(1, n + 1):  # MATLAB's t: sample t covers [t - 1, t]
      if hi >= t and lo < t - 1:
        p = 1.0
      elif hi >= t - 1 and lo < t - 1:
        p = hi - (t - 1)
      elif hi >= t and lo < t:
        p = t - lo
      elif hi >= t - 1 and lo < t:
        p = (fractions[j] - prev) * n
      else:
        p = 0.0
      if p <= 0:
        continue
      pt = x[t - 1]
      c, r = int(np.floor(pt.real)), int(np.floor(pt.imag))
      fx, fy = pt.real - c, pt.imag - r
      psf[r, c] += p * (1 - fx) * (1 - fy)
      psf[r, c + 1] += p * fx * (1 - fy)
      psf[r + 1, c] += p * (1 - fx) * fy
      psf[r + 1, c + 1] += p * fx * fy
  return psf / psf.sum(), (int(round(x[0].imag)), int(round(x[0].real)))


def _np_draws(d):
  return {k: np.asarray(v, np.float64) for k, v in d.items()}


NUM = 1000  # trajectories drawn once for the module (JAX, per-sample keys)


@pytest.fixture(scope="module")
def drawn():
  cfg = _cfg()
  draws = kernels.trajectory_draws(jax.random.split(jax.random.key(11), NUM), cfg)
  paths = kernels.trajectory_paths(draws, MAX_LEN)
  psfs, centred, _ = kernels.trajectory_kernels(draws, cfg)
  return cfg, draws, np.asarray(paths), np.asarray(psfs, np.float64), np.asarray(centred)


def test_walk_matches_numpy_reference_on_the_same_draws(drawn):
  _, draws, paths, _, _ = drawn
  d = {k: v[:16] for k, v in _np_draws(draws).items()}
  ref, big = np_walk(d["expl"], d["centripetal"], d["prob_big_shake"], d["gaussian_shake"],
                     d["init_angle"], d["u_shake"], d["u_angle"], d["normal"])
  assert big.sum() > 5  # the impulsive shakes are exercised
  ref = np.stack([ref.real, ref.imag], axis=-1)
  # float32 accumulation over 2000 steps against float64: a few thousandths of a pixel
  np.testing.assert_allclose(paths[:16], ref, atol=5e-3)
  step_len = np.linalg.norm(np.diff(paths, axis=1), axis=-1)
  np.testing.assert_allclose(step_len.sum(axis=1), MAX_LEN, rtol=1e-4)  # length = max_len


def test_psf_matches_reference_rasteriser_on_the_same_draws(drawn):
  cfg, draws, paths, psfs, centred = drawn
  fractions = tuple(cfg.trajectory_fractions)
  size = kernels.trajectory_support(cfg)
  fidx = np.asarray(draws["fraction_index"])[:12]
  assert set(fidx.tolist()) >= {0, 1, 2, 3}  # the samples cover every exposure fraction
  # The reference centres the whole path; our default centres the exposed part. Compare the same
  # PSF up to the integer translation that puts x_0 on the same pixel.
  tcfg = _cfg(trajectory_center="trajectory")
  few = {k: v[:12] for k, v in draws.items()}
  tk, tc, _ = kernels.trajectory_kernels(few, tcfg)
  tk, tc = np.asarray(tk, np.float64), np.asarray(tc)
  for i in range(len(fidx)):
    x = paths[i, :, 0].astype(np.float64) + 1j * paths[i, :, 1]
    ref, (r0, c0) = np_psf(x, int(fidx[i]), fractions, cfg.trajectory_canvas)
    for k, c in ((tk[i], tc[i]), (psfs[i], centred[i])):
      # x_0 lies on a whole pixel in both
      np.testing.assert_allclose(c[0], np.round(c[0]), atol=1e-5)
      dr, dc = r0 - int(round(c[0, 1])) - size // 2, c0 - int(round(c[0, 0])) - size // 2
      shifted = np.zeros_like(ref)
      rows, cols = np.nonzero(k > 0)
      shifted[rows + dr, cols + dc] = k[rows, cols]
      np.testing.assert_allclose(shifted, ref, atol=2e-4 * ref.max() + 1e-7)
  # The whole-path centring of the reference keeps the path's box within a pixel of the middle.
  lo, hi = tc.min(axis=1), tc.max(axis=1)
  assert np.abs((lo + hi) / 2).max() <= 0.5 + 1e-4


def test_exposure_weights_are_the_reference_intervals_cumulated():
  n = 2000
  fractions = np.array([1 / 1000, 1 / 10, 1 / 2, 1.0])
  w = np.asarray(kernels.exposure_weights(jnp.asarray(fractions, jnp.float32), n))
  np.testing.assert_allclose(w.sum(axis=1), fractions * n, rtol=1e-5)
  assert w[0, 0] == 1.0 and w[0, 1] == 1.0 and w[0, 2] < 1e-6  # first sample is exposed
  assert (np.diff(w, axis=0) >= 0).all()  # longer exposures contain shorter ones


def test_trajectory_statistics_match_reference_in_distribution(drawn):
  """1,000 JAX trajectories against 1,000 of the NumPy reference with its own random numbers."""
  ours = drawn[2].astype(np.float64)
  ref = np_random_walks(np.random.default_rng(7), NUM)
  ref = np.stack([ref.real, ref.imag], axis=-1)

  def statistics(p):
    v = np.diff(p, axis=1)
    cos = (v[:, 1:] * v[:, :-1]).sum(-1) / (np.linalg.norm(v[:, 1:], axis=-1) *
                                            np.linalg.norm(v[:, :-1], axis=-1))
    return {"length": np.linalg.norm(v, axis=-1).sum(axis=1),
            "displacement": np.linalg.norm(p[:, -1] - p[:, 0], axis=-1),
            "extent": np.linalg.norm(p.max(axis=1) - p.min(axis=1), axis=-1),
            "direction_changes": (cos < 0).sum(axis=1)}  # turns by more than 90 degrees

  a, b = statistics(ours), statistics(ref)
  np.testing.assert_allclose(a["length"], MAX_LEN, rtol=1e-4)
  np.testing.assert_allclose(b["length"], MAX_LEN, rtol=1e-9)
  for name in ("displacement", "extent", "direction_changes"):
    se = np.sqrt(a[name].var() / NUM + b[name].var() / NUM)
    assert abs(a[name].mean() - b[name].mean()) < 4 * se, name
    assert stats.ks_2samp(a[name], b[name]).pvalue > 1e-3, name
  assert 0.2 < a["direction_changes"].mean() < 5  # big shakes happen, rarely


def test_trajectory_kernels_fit_and_are_normalised(drawn):
  k = drawn[3]
  assert k.shape == (NUM, 65, 65)
  assert k.min() >= 0.0
  np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
  # nothing is cut at the border: the outer ring is empty for max_len 60 on a 65 support
  ring = np.concatenate([k[:, 0], k[:, -1], k[:, :, 0], k[:, :, -1]], axis=1)
  assert ring.max() == 0.0
  # the exposed part is centred: the PSF's bounding box centre is within 1.5 px of the middle
  for ki in k[:100]:
    rows, cols = np.nonzero(ki > 0)
    assert abs((rows.min() + rows.max()) / 2 - 32) <= 1.5
    assert abs((cols.min() + cols.max()) / 2 - 32) <= 1.5
  # exposure fractions are drawn uniformly (DeblurGAN's part 0..3)
  freq = np.bincount(np.asarray(drawn[1]["fraction_index"]), minlength=4) / NUM
  np.testing.assert_allclose(freq, 0.25, atol=0.05)


def test_scatter_and_matmul_splat_agree():
  pts = jax.random.uniform(jax.random.key(5), (3, 200, 2), minval=-9.0, maxval=9.0)
  w = jax.random.uniform(jax.random.key(6), (3, 200))
  a = np.asarray(kernels.splat(pts, w, 15, method="scatter"))
  b = np.asarray(kernels.splat(pts, w, 15, method="matmul"))
  np.testing.assert_allclose(a, b, atol=1e-7)
  assert (a[:, 0] > 0).any() or (a[:, :, 0] > 0).any()  # points reach the border ...
  # ... and points outside the support are dropped, not clamped onto the edge
  far = kernels.splat(jnp.array([[[0.0, 0.0], [20.0, 0.0]]]), jnp.ones((1, 2)), 5, "scatter")
  np.testing.assert_allclose(np.asarray(far)[0, 2, 2], 1.0)
