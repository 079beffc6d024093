"""Each metric against a value computed by hand on constructed inputs."""
import numpy as np
import pytest

from fdeblur import metrics


def _square_shape(side=100.0, n=68):
  """68 points on the boundary of a side x side square at the origin (bbox diagonal side*sqrt2)."""
  t = np.linspace(0, 4, n, endpoint=False)
  pts = np.zeros((n, 2))
  for i, s in enumerate(t):
    k, f = int(s), s - int(s)
    pts[i] = [(f, 0), (1, f), (1 - f, 1), (0, 1 - f)][k]
  return pts * side


def test_psnr_ssim_oracle_is_perfect():
  x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  assert np.isinf(np.asarray(metrics.psnr(x, x))).all()
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-6)
  # MSE 0.01 -> 20 dB.
  np.testing.assert_allclose(metrics.psnr(np.full((1, 4, 4, 1), 0.6), np.full((1, 4, 4, 1), 0.5)),
                             20.0, rtol=1e-5)


def test_shifted_landmarks_give_the_known_error():
  gt = _square_shape(100.0)[None]
  shift = np.array([3.0, 4.0])  # every point moves 5 px
  err = metrics.landmark_error(gt + shift, gt)
  np.testing.assert_allclose(err, [5.0 / (100.0 * np.sqrt(2))])
  np.testing.assert_allclose(metrics.landmark_error(gt, gt), [0.0])
  # Given boxes: diagonal of a 30 x 40 box is 50.
  np.testing.assert_allclose(metrics.landmark_error(gt + shift, gt, boxes=[[0, 0, 30, 40]]), [0.1])
  # Inter-ocular: points 36 and 45 at distance 50.
  gt2 = np.zeros((1, 68, 2))
  gt2[0, 45] = [50.0, 0.0]
  np.testing.assert_allclose(metrics.landmark_error(gt2 + shift, gt2, "interocular"), [0.1])
  # Half the points off by 10 px, half exact: mean distance 5.
  pred = gt.copy()
  pred[0, :34, 0] += 10.0
  np.testing.assert_allclose(metrics.landmark_error(pred, gt), [5.0 / (100.0 * np.sqrt(2))])
  # A failed landmarker (NaN) is +inf, i.e. a failure.
  assert np.isinf(metrics.landmark_error(np.full_like(gt, np.nan), gt)[0])


def test_ced_auc_failure_of_a_known_error_list():
  errors = [0.0, 0.04, 0.1, np.inf]
  grid, frac = metrics.ced(errors)
  assert grid[0] == 0.0 and grid[-1] == pytest.approx(0.08) and len(grid) == 801
  assert frac[0] == 0.25 and frac[400] == 0.5 and frac[-1] == 0.5  # CED(0.04) includes 0.04
  # ∫CED over [0, 0.08] = 0.25 * 0.04 + 0.5 * 0.04 = 0.03, / 0.08 = 0.375 (Simpson on a step
  # function is off by at most one grid cell).
  assert metrics.auc(errors) == pytest.approx(0.375, abs=2e-3)
  assert metrics.failure_rate(errors) == 0.5
  assert metrics.auc([0.0, 0.0]) == pytest.approx(1.0) and metrics.failure_rate([0.0]) == 0.0
  assert metrics.auc([0.2]) == 0.0 and metrics.failure_rate([0.2]) == 1.0
  # Uniform errors on [0, 0.08]: CED(x) = x / 0.08, AUC = 1/2.
  assert metrics.auc(np.linspace(0, 0.08, 2001)) == pytest.approx(0.5, abs=1e-3)
  s = metrics.summarize_landmarks(errors)
  assert s["mean_error"] == pytest.approx(0.14 / 3) and s["failure_rate"] == 0.5


def test_cosine_similarity_and_detection_summary():
  a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
  b = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
  np.testing.assert_allclose(metrics.cosine_similarity(a, b), [1.0, 1 / np.sqrt(2), -1.0])
  assert np.isnan(metrics.cosine_similarity([[0.0, 0.0]], [[1.0, 0.0]])[0])
  s = metrics.detection_summary([True, False, True, True], [0.5, 9.0, 1.0, 1.5])
  assert s == {"failure_rate": 0.25, "mean_confidence": 1.0}
  s = metrics.detection_summary([False], [0.0])
  assert s["failure_rate"] == 1.0 and np.isnan(s["mean_confidence"])
