"""Face detection and square crops shared by the dataset builders (OpenCV, weights in the wheel)."""
import functools
import os

import cv2
import numpy as np


@functools.cache
def _cascade(name: str) -> cv2.CascadeClassifier:
  path = os.path.join(cv2.data.haarcascades, name)
  c = cv2.CascadeClassifier(path)
  if c.empty():
    raise RuntimeError(f"could not load OpenCV cascade {path}")
  return c


def to_gray_u8(image: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def detect_faces(image: np.ndarray, min_size: int = 24) -> list[tuple[int, int, int, int]]:
  """Boxes (x, y, w, h), largest first: frontal Haar cascade, then the profile cascade on the
  image and its mirror (the cameraman looks sideways)."""
  gray = cv2.equalizeHist(to_gray_u8(image))
  boxes = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
      gray, 1.1, 5, minSize=(min_size, min_size))
  if len(boxes) == 0:
    boxes = _cascade("haarcascade_profileface.xml").detectMultiScale(
        gray, 1.05, 3, minSize=(min_size, min_size))
  if len(boxes) == 0:
    w = gray.shape[1]
    flipped = _cascade("haarcascade_profileface.xml").detectMultiScale(
        cv2.flip(gray, 1), 1.05, 3, minSize=(min_size, min_size))
    boxes = [(w - x - bw, y, bw, bh) for x, y, bw, bh in flipped]
  boxes = [tuple(int(v) for v in b) for b in boxes]
  return sorted(boxes, key=lambda b: -b[2] * b[3])


def square_crop(image: np.ndarray, center: tuple[float, float], side: float,
                size: int) -> np.ndarray:
  """Square crop of `side` pixels around `center` (x, y), edge-replicated outside the image,
  resized to size x size (area filter when shrinking, cubic when enlarging)."""
  m = float(size) / side
  # Affine map from the source crop to the output grid.
  mat = np.array([[m, 0, size / 2 - m * center[0]], [0, m, size / 2 - m * center[1]]], np.float64)
  interp = cv2.INTER_AREA if m < 1 else cv2.INTER_CUBIC
  if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-shrink, then warp.
    scale = max(1, int(1 / m))
    if scale > 1:
      image = cv2.resize(image, None, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA)
      mat[:, :2] *= scale
    interp = cv2.INTER_LINEAR
  return cv2.warpAffine(image, mat, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
