"""Image quality metrics (dm-pix). Inputs are float images in [0, 1], [B, H, W, C]."""
import dm_pix as pix
import jax.numpy as jnp


def psnr(pred, target):
  """Per-image PSNR in dB (max value 1); identical images give +inf."""
  return pix.psnr(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))


def ssim(pred, target):
  """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)."""
  return pix.ssim(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32), max_val=1.0)


# --- landmarks (menpofit conventions; Chrysos et al. 2019, Sec. 5.4) ----------------------------
# Plain numpy on host arrays: these run on the outputs of CPU landmarkers, not inside jit.

import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402

AUC_MAX_ERROR = 0.08  # the 2019 paper's cut-off
CED_STEP = 1e-4  # menpofit's grid step


def bbox_diagonal(points) -> np.ndarray:
  """Diagonal sqrt(w^2 + h^2) of the bounding box of each shape: points [..., P, 2] -> [...]."""
  points = np.asarray(points, np.float64)
  extent = points.max(-2) - points.min(-2)
  return np.sqrt((extent ** 2).sum(-1))


def interocular_distance(points) -> np.ndarray:
  """300W's normaliser: distance between the outer eye corners (points 36 and 45, 0-based)."""
  points = np.asarray(points, np.float64)
  return np.linalg.norm(points[..., 36, :] - points[..., 45, :], axis=-1)


def landmark_error(pred, gt, normalizer: str = "diagonal", boxes=None) -> np.ndarray:
  """Mean point-to-point Euclidean error of each shape, divided by a per-shape normaliser.

  pred, gt: [N, P, 2] (x, y). normalizer: "diagonal" (the ground-truth box diagonal, 2019
  paper), "interocular" (outer eye corners, 300W) or "none". boxes: optional [N, 4] ground-truth
  boxes (x, y, w, h) for "diagonal"; by default the bounding box of `gt`. A shape with any
  non-finite predicted point (landmarker failure) gets error +inf.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape or pred.shape[-1] != 2:
    raise ValueError(f"landmark_error: shapes {pred.shape} and {gt.shape} must be equal [N, P, 2]")
  dist = np.linalg.norm(pred - gt, axis=-1).mean(-1)
  if normalizer == "diagonal":
    if boxes is None:
      norm = bbox_diagonal(gt)
    else:
      boxes = np.asarray(boxes, np.float64)
      norm = np.sqrt(boxes[..., 2] ** 2 + boxes[..., 3] ** 2)
  elif normalizer == "interocular":
    norm = interocular_distance(gt)
  elif normalizer == "none":
    norm = np.ones_like(dist)
  else:
    raise ValueError(f"unknown normalizer {normalizer!r} (diagonal | interocular | none)")
  with np.errstate(invalid="ignore", divide="ignore"):
    err = dist / norm
  return np.where(np.isfinite(err), err, np.inf)


def ced(errors, max_error: float = AUC_MAX_ERROR, step: float = CED_STEP):
  """Cumulative error distribution: (grid [G] from 0 to max_error, fraction of errors <= x)."""
  errors = np.asarray(errors, np.float64).ravel()
  num = int(round(max_error / step)) + 1
  grid = np.linspace(0.0, max_error, num)
  if errors.size == 0:
    return grid, np.full(num, np.nan)
  return grid, (errors[None, :] <= grid[:, None] + 1e-12).mean(1)


def auc(errors, max_error: float = AUC_MAX_ERROR, step: float = CED_STEP) -> float:
  """Area under the CED up to max_error, over max_error (1 = every error is 0)."""
  grid, frac = ced(errors, max_error, step)
  return float(integrate.simpson(frac, x=grid) / max_error)


def failure_rate(errors, max_error: float = AUC_MAX_ERROR) -> float:
  """1 - CED(max_error): share of shapes with error above max_error (failures are +inf)."""
  errors = np.asarray(errors, np.float64).ravel()
  if errors.size == 0:
    return float("nan")
  return float((errors > max_error + 1e-12).mean())


# --- identity (2019 paper, Fig. 11-12) ----------------------------------------------------------

def cosine_similarity(a, b) -> np.ndarray:
  """Row-wise cosine similarity of embeddings a, b [N, D] -> [N] (NaN where a row is missing)."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --- detection (Fan & Luo, Table 1) -------------------------------------------------------------

def detection_summary(detected, confidence) -> dict:
  """detected [N] bool (the face was found), confidence [N] (detector score of the match; ignored
  where not detected) -> failure rate (share not detected) and mean confidence over detections."""
  detected = np.asarray(detected, bool).ravel()
  confidence = np.asarray(confidence, np.float64).ravel()
  n = detected.size
  return {"failure_rate": float(1.0 - detected.mean()) if n else float("nan"),
          "mean_confidence": float(confidence[detected].mean()) if detected.any() else float("nan")}


def summarize_landmarks(errors, max_error: float = AUC_MAX_ERROR) -> dict:
  errors = np.asarray(errors, np.float64)
  finite = errors[np.isfinite(errors)]
  return {"auc": auc(errors, max_error), "failure_rate": failure_rate(errors, max_error),
          "mean_error": float(finite.mean()) if finite.size else float("nan")}
