"""Face detection, landmark files and square face crops shared by the dataset builders and the
mining tool (OpenCV only; the Haar cascade weights ship in the wheel).

Coordinates: pixel centres at integer positions, (x, y), 0-based. `.pts` files (300W / 300VW) are
1-based and are converted on reading and writing. A crop is an affine map `M` (2x3) from image
to crop coordinates: `crop = warpAffine(image, M)` and `points_crop = transform_points(points, M)`,
so a landmark lands on the same face point in the crop (exactly, up to interpolation).
"""
import os
import threading

import cv2
import numpy as np

# Left-right mirror permutation of the 68-point iBUG/300W markup (0-based): after a horizontal
# flip, point i of the mirrored face is point FLIP_68[i] of the original.
FLIP_68 = np.array(
    list(range(16, -1, -1))                      # jaw 0-16
    + list(range(26, 21, -1))                    # right brow 17-21 <- left brow 26-22
    + list(range(21, 16, -1))                    # left brow 22-26 <- right brow 21-17
    + [27, 28, 29, 30]                           # nose bridge
    + [35, 34, 33, 32, 31]                       # nostrils
    + [45, 44, 43, 42, 47, 46]                   # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]                   # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],          # inner lips
    np.int32)
assert sorted(FLIP_68.tolist()) == list(range(68)) and (FLIP_68[FLIP_68] == np.arange(68)).all()


_local = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
  """One classifier per thread: a CascadeClassifier shared by threads gives wrong detections."""
  cache = _local.__dict__.setdefault("cascades", {})
  if name not in cache:
    path = os.path.join(cv2.data.haarcascades, name)
    c = cv2.CascadeClassifier(path)
    if c.empty():
      raise RuntimeError(f"could not load OpenCV cascade {path}")
    cache[name] = c
  return cache[name]


def to_gray_u8(image: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


FRONTAL_NEIGHBOURS, PROFILE_NEIGHBOURS = 5, 3  # the cascades' vote thresholds


def detect_faces_scored(image: np.ndarray, min_size: int = 24) -> list[tuple[tuple, int]]:
  """[(box (x, y, w, h), votes)], largest first: frontal Haar cascade, then the profile cascade
  on the image and its mirror (the cameraman looks sideways). `votes` (the number of
  overlapping raw detections merged into the box) is the cascade's confidence."""
  gray = cv2.equalizeHist(to_gray_u8(image))
  boxes, votes = _cascade("haarcascade_frontalface_default.xml").detectMultiScale2(
      gray, 1.1, FRONTAL_NEIGHBOURS, minSize=(min_size, min_size))
  if len(boxes) == 0:
    boxes, votes = _cascade("haarcascade_profileface.xml").detectMultiScale2(
        gray, 1.05, PROFILE_NEIGHBOURS, minSize=(min_size, min_size))
  if len(boxes) == 0:
    w = gray.shape[1]
    flipped, votes = _cascade("haarcascade_profileface.xml").detectMultiScale2(
        cv2.flip(gray, 1), 1.05, PROFILE_NEIGHBOURS, minSize=(min_size, min_size))
    boxes = [(w - x - bw, y, bw, bh) for x, y, bw, bh in flipped]
  found = [(tuple(int(v) for v in b), int(n)) for b, n in zip(boxes, votes)]
  return sorted(found, key=lambda f: -f[0][2] * f[0][3])


def detect_faces(image: np.ndarray, min_size: int = 24) -> list[tuple[int, int, int, int]]:
  """Boxes (x, y, w, h), largest first (see detect_faces_scored)."""
  return [b for b, _ in detect_faces_scored(image, min_size)]


def _shrink(image: np.ndarray, max_side: int):
  """(image shrunk to at most max_side pixels, factor back to the original's coordinates)."""
  h, w = image.shape[:2]
  f = min(1.0, max_side / max(h, w))
  if f >= 1.0:
    return image, 1.0, 1.0
  small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                     interpolation=cv2.INTER_AREA)
  return small, w / small.shape[1], h / small.shape[0]


def detect_faces_scaled(image: np.ndarray, max_side: int = 640,
                        min_size: int = 24) -> list[tuple[float, float, float, float]]:
  """detect_faces on a copy shrunk to at most `max_side` pixels (big photos and HD video
  frames), boxes returned in the original image's coordinates, largest first."""
  return [b for b, _ in detect_faces_scored_scaled(image, max_side, min_size)]


def detect_faces_scored_scaled(image: np.ndarray, max_side: int = 640, min_size: int = 24):
  """detect_faces_scored on a copy shrunk to at most `max_side` pixels; [(box, votes)] in the
  original image's coordinates."""
  small, sx, sy = _shrink(image, max_side)
  return [((x * sx, y * sy, bw * sx, bh * sy), n)
          for (x, y, bw, bh), n in detect_faces_scored(small, min_size)]


# --- the landmark check ---------------------------------------------------------------------------

EYE_CHECK_SIDE = 160  # the box's upper part is enlarged to this width before the eye cascade
# Detections with at least this many cascade votes skip the eye check. Measured (frontal faces of
# 50-400 px, sharp and with 7-9 px motion blur: astronaut, grace_hopper, face_recognition's
# Obama/Biden photos): 18-57 votes; non-faces the cascades accept (the handle of scikit-image's
# `coffee` cup, `rocket`) and spurious boxes on clothing: 4-8. OpenCV's eye cascade misses the
# eyes of many real faces (all four Obama/Biden photos, sharp or blurred), so it only decides
# the weak detections.
SURE_VOTES = 12


def eye_check(image: np.ndarray, box) -> str | None:
  """The landmark sanity check of a detection: at least one eye (OpenCV's eye cascade, 10-50 %
  of the box width) in the upper 60 % of the box. Returns None when it passes, else the reason.
  It rejects detections on things that are not faces (the handle of scikit-image's `coffee`
  cup); it also rejects strict profiles (one eye hidden and the other too flat to detect)."""
  x, y, w, h = (int(round(v)) for v in box)
  gray = to_gray_u8(image)
  x0, y0 = max(0, x), max(0, y)
  roi = gray[y0:max(y0, y + int(0.6 * h)), x0:max(x0, x + w)]
  if roi.size == 0 or w <= 0:
    return "face box outside the image"
  s = max(1.0, EYE_CHECK_SIDE / w)
  if s > 1.0:
    roi = cv2.resize(roi, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
  roi = cv2.equalizeHist(roi)
  lo, hi = max(4, int(0.1 * w * s)), max(5, int(0.5 * w * s))
  eyes = _cascade("haarcascade_eye.xml").detectMultiScale(roi, 1.1, 3, minSize=(lo, lo),
                                                          maxSize=(hi, hi))
  return None if len(eyes) else "no eye found in the face box (landmark check)"


def detect_checked(image: np.ndarray, *, max_side: int = 640, min_size: int = 24,
                   min_votes: int = 0, check: bool = True):
  """Haar detection, then the confidence threshold (`min_votes`; 0 keeps the cascades' own
  thresholds) and, for detections below SURE_VOTES, the landmark check (eye_check). Returns (faces [(box, votes)] largest first,
  rejected [(box, reason)])."""
  faces, rejected = [], []
  for box, votes in detect_faces_scored_scaled(image, max_side, min_size):
    reason = f"low confidence ({votes} < {min_votes} votes)" if votes < min_votes else None
    if reason is None and check and votes < SURE_VOTES:
      reason = eye_check(image, box)
    if reason is None:
      faces.append((box, votes))
    else:
      rejected.append((box, reason))
  return faces, rejected


def iou(a, b) -> float:
  """Intersection over union of two (x, y, w, h) boxes."""
  ax0, ay0, aw, ah = a
  bx0, by0, bw, bh = b
  iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
  ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
  inter = iw * ih
  union = aw * ah + bw * bh - inter
  return float(inter / union) if union > 0 else 0.0


# --- landmark files -----------------------------------------------------------------------------

def read_pts(path: str) -> np.ndarray:
  """A 300W/300VW `.pts` file -> float32 [n, 2] (x, y), 0-based. Raises ValueError if malformed."""
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  n = None
  for line in text.splitlines():
    if line.strip().lower().startswith("n_points"):
      n = int(line.split(":", 1)[1])
  if "{" not in text or "}" not in text:
    raise ValueError(f"{path}: no '{{ ... }}' block")
  body = text[text.index("{") + 1:text.rindex("}")]
  values = np.array(body.split(), dtype=np.float64)
  if values.size % 2 or (n is not None and values.size != 2 * n) or values.size == 0:
    raise ValueError(f"{path}: expected {n} points, found {values.size / 2}")
  points = values.reshape(-1, 2) - 1.0  # 1-based -> 0-based
  if not np.isfinite(points).all():
    raise ValueError(f"{path}: non-finite coordinates")
  return points.astype(np.float32)


def write_pts(path: str, points: np.ndarray) -> None:
  """float [n, 2] (x, y) 0-based -> a 300W `.pts` file (1-based)."""
  points = np.asarray(points, np.float64) + 1.0
  lines = [f"version: 1", f"n_points: {len(points)}", "{"]
  lines += [f"{x:.3f} {y:.3f}" for x, y in points]
  lines.append("}")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


# --- alignment and crops ------------------------------------------------------------------------

def alignment_from_landmarks(points: np.ndarray, margin: float) -> tuple[float, float, float]:
  """(cx, cy, side): a square around the landmarks' extent, `margin` x its longer side (the 2017
  paper rescales by the size of the landmarks and crops around them)."""
  lo, hi = points.min(0), points.max(0)
  cx, cy = (lo + hi) / 2
  return float(cx), float(cy), float(margin * max(hi - lo))


def alignment_from_box(box, margin: float) -> tuple[float, float, float]:
  x, y, w, h = box
  return float(x + w / 2), float(y + h / 2), float(margin * max(w, h))


def crop_matrix(center, side: float, size: int) -> np.ndarray:
  """2x3 affine map from image coordinates to a size x size crop of `side` pixels at `center`."""
  m = float(size) / side
  return np.array([[m, 0, (size - 1) / 2 - m * center[0]],
                   [0, m, (size - 1) / 2 - m * center[1]]], np.float64)


def transform_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
  points = np.asarray(points, np.float64)
  return (points @ mat[:, :2].T + mat[:, 2]).astype(np.float32)


def transform_box(box, mat: np.ndarray) -> np.ndarray:
  """(x, y, w, h) through an axis-aligned (scale + shift) affine map."""
  x, y, w, h = box
  (x0, y0), (x1, y1) = transform_points(np.array([[x, y], [x + w, y + h]]), mat)
  return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)


def warp(image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
  """warpAffine of `image` through a similarity `mat` into size x size, edge-replicated outside
  the image, with an area pre-filter when shrinking (no aliasing) and cubic when enlarging.
  Only the region of interest is touched, so HD frames cost no more than small ones."""
  mat = np.asarray(mat, np.float64)
  scale = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
  inv = cv2.invertAffineTransform(mat)
  corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
  src = corners @ inv[:, :2].T + inv[:, 2]
  x0, y0 = np.floor(src.min(0)).astype(int) - 3
  x1, y1 = np.ceil(src.max(0)).astype(int) + 4
  h, w = image.shape[:2]
  ys, xs = np.clip(np.arange(y0, y1), 0, h - 1), np.clip(np.arange(x0, x1), 0, w - 1)
  roi = image[ys[:, None], xs[None, :]]  # replicate-padded region of interest
  mat = mat.copy()
  mat[:, 2] += mat[:, :2] @ np.array([x0, y0], np.float64)  # roi -> crop
  k = int(1.0 / scale) if scale < 1 else 1
  if k > 1:  # area pre-shrink; map the small image's pixel centres back exactly
    rh, rw = roi.shape[:2]
    sw, sh = max(1, round(rw / k)), max(1, round(rh / k))
    roi = cv2.resize(roi, (sw, sh), interpolation=cv2.INTER_AREA)
    sx, sy = rw / sw, rh / sh
    small_to_roi = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    mat = mat @ small_to_roi
  interp = cv2.INTER_LINEAR if scale < 1 else cv2.INTER_CUBIC
  return cv2.warpAffine(roi, mat, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def square_crop(image: np.ndarray, center: tuple[float, float], side: float,
                size: int) -> np.ndarray:
  """Square crop of `side` pixels around `center` (x, y), edge-replicated outside the image,
  resized to size x size (area filter when shrinking, cubic when enlarging)."""
  return warp(image, crop_matrix(center, side, size), size)
