"""Faces with dlib (the optional `[faces]` extra: dlib-bin + face-recognition-models, whose wheels
ship the weights; nothing is downloaded): HOG and CNN (MMOD) detectors with confidences, the
68-point shape predictor, the 128-d ResNet identity embedding. Plus the crop / paste-back
geometry of the deblur command (OpenCV only).

Boxes are (x, y, w, h) floats in pixels; points are (x, y), 0-based; images RGB uint8.
"""
import functools
import importlib.util
import os

import cv2
import numpy as np

from input_pipeline import faces_crop

INSTALL_HINT = ("pip install 'fdeblur[faces]' (dlib-bin==20.0.1.post1 "
                "face-recognition-models==0.3.0)")
MODEL_FILES = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}


class FacesUnavailable(ImportError):
  """The `[faces]` extra is missing (or its model files are)."""


def models_dir() -> str:
  """face_recognition_models' `models/` folder, found without importing the package (its
  __init__ imports pkg_resources, gone in setuptools >= 81)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise FacesUnavailable(f"face_recognition_models is not installed: {INSTALL_HINT}")
  return os.path.join(list(spec.submodule_search_locations)[0], "models")


def model_path(name: str) -> str:
  path = os.path.join(models_dir(), MODEL_FILES[name])
  if not os.path.isfile(path):
    raise FacesUnavailable(f"{path} is missing; reinstall: {INSTALL_HINT}")
  return path


def _dlib():
  try:
    import dlib  # noqa: PLC0415
  except ImportError as e:
    raise FacesUnavailable(f"dlib is not installed: {INSTALL_HINT}") from e
  return dlib


def available() -> bool:
  """True when dlib and the model files are installed."""
  try:
    _dlib()
    for name in MODEL_FILES:
      model_path(name)
  except FacesUnavailable:
    return False
  return True


def _rect(dlib, box):
  x, y, w, h = box
  return dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))


def _box(rect):
  return (float(rect.left()), float(rect.top()), float(rect.width()), float(rect.height()))


class Dlib:
  """Lazily loaded dlib models (each file is read on first use, once per process)."""

  def __init__(self):
    self.dlib = _dlib()
    models_dir()

  @functools.cached_property
  def hog(self):
    return self.dlib.get_frontal_face_detector()

  @functools.cached_property
  def cnn(self):
    return self.dlib.cnn_face_detection_model_v1(model_path("cnn"))

  @functools.cached_property
  def predictor68(self):
    return self.dlib.shape_predictor(model_path("landmarks68"))

  @functools.cached_property
  def encoder(self):
    return self.dlib.face_recognition_model_v1(model_path("embedding"))

  def detect(self, image, method: str = "hog", upsample: int = 1):
    """[(box, confidence)], most confident first. HOG: SVM score (threshold 0); CNN: MMOD
    confidence."""
    image = np.ascontiguousarray(image)
    if method == "hog":
      rects, scores, _ = self.hog.run(image, upsample, 0.0)
      found = [(_box(r), float(s)) for r, s in zip(rects, scores)]
    elif method == "cnn":
      if min(image.shape[:2]) * 2 ** upsample < CNN_MIN_SIDE:
        return []  # dlib's CNN raises on a picture thinner than its filters (< 7 px)
      found = [(_box(d.rect), float(d.confidence)) for d in self.cnn(image, upsample)]
    else:
      raise ValueError(f"unknown detector {method!r} (hog | cnn)")
    return sorted(found, key=lambda f: -f[1])

  def shape(self, image, box):
    return self.predictor68(np.ascontiguousarray(image), _rect(self.dlib, box))

  def landmarks(self, image, box) -> np.ndarray:
    """68 points [68, 2] (x, y) inside `box`."""
    return np.array([[p.x, p.y] for p in self.shape(image, box).parts()], np.float32)

  def embedding(self, image, box) -> np.ndarray:
    """128-d identity embedding of the face in `box` (aligned by its 68 points)."""
    image = np.ascontiguousarray(image)
    return np.array(self.encoder.compute_face_descriptor(image, self.shape(image, box)),
                    np.float32)


@functools.lru_cache(maxsize=1)
def load() -> Dlib:
  """The process-wide dlib models; raises FacesUnavailable with the install command."""
  return Dlib()


def detect(image, method: str = "haar", upsample: int = 1):
  """[(box, confidence)] with any detector: haar (OpenCV, no extra; confidence = the cascade's
  votes), hog, cnn. Unchecked: see detect_checked."""
  if method == "haar":
    return [(tuple(b), float(v)) for b, v in faces_crop.detect_faces_scored_scaled(image)]
  return load().detect(image, method, upsample)


# dlib's CNN (MMOD) finds faces of ~80 px and up (40 px with 2x upsampling); a picture whose short
# side, upsampled, is below this holds none it could find.
CNN_MIN_SIDE = 32

# Default confidence thresholds: haar = cascade votes (0: the cascades' own thresholds), hog =
# dlib's SVM score, cnn = MMOD confidence.
MIN_CONFIDENCE = {"haar": 0.0, "hog": 0.2, "cnn": 0.5}
# At or above these the eye check is skipped: it misses the eyes of many real faces, so it only
# decides weak detections (haar: faces_crop.SURE_VOTES; hog: real faces scored 0.48-2.3 on the
# held-out photographs, sharp and blurred, and found nothing on `coffee`; cnn: MMOD's margin).
SURE_CONFIDENCE = {"haar": float(faces_crop.SURE_VOTES), "hog": 0.4, "cnn": 0.8}


# dlib's face boxes in the Haar cascade's convention, in which the training data's face sizes and
# crops are measured (so --scale=train brings a face to its training size whichever detector found
# it): Haar side = ratio x dlib side, Haar centre = dlib centre + (dx, dy) x dlib side. Medians of
# the pairs found on the training photographs by `python -m benchmarks.detector_boxes` (never the
# held-out ones; 2026-12-03, 79 photographs at full and half size: 108 HOG pairs, side ratio
# quartiles 1.07-1.18; 39 CNN pairs, measured at FALLBACK_SIDE, 0.99-1.17).
TO_HAAR = {"hog": (1.13, 0.0, -0.10), "cnn": (1.09, 0.06, -0.01)}
# --detector=auto's fallback runs dlib's CNN on a copy whose long side is this many pixels (enlarged
# or shrunk), without dlib's 2x upsampling: it finds faces down to ~80 px there (1/8 of the
# picture's side) in ~2.6 s on 2 CPU cores; a 1024 px photo at full size with upsampling takes 27 s.
FALLBACK_SIDE = 640


def to_haar_box(box, method: str):
  """A `method` detector's box (x, y, w, h) in the Haar cascade's convention (TO_HAAR)."""
  if method not in TO_HAAR:
    return tuple(float(v) for v in box)
  ratio, dx, dy = TO_HAAR[method]
  x, y, w, h = (float(v) for v in box)
  side = max(w, h)
  cx, cy = x + w / 2 + dx * side, y + h / 2 + dy * side
  return (cx - w * ratio / 2, cy - h * ratio / 2, w * ratio, h * ratio)


def detect_cnn_rescaled(image, check: bool = True, side: int = FALLBACK_SIDE):
  """detect_checked with dlib's CNN on a copy of `image` whose long side is `side` px, no
  upsampling; boxes in `image`'s pixels."""
  h, w = image.shape[:2]
  f = side / max(h, w)
  scaled = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))),
                      interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
  sx, sy = w / scaled.shape[1], h / scaled.shape[0]
  found, rejected = detect_checked(scaled, "cnn", check=check, upsample=0)

  def back(box):
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

  return [(back(b), c) for b, c in found], [(back(b), r) for b, r in rejected]


def find_faces(image, detector: str = "haar", min_confidence: float | None = None,
               check: bool = True, fallback: bool = False):
  """The deblur command's faces: (faces [(box, confidence)], rejected [(box, reason)], the
  detector that found them), boxes in the Haar convention (to_haar_box). fallback: when
  `detector` finds no face, dlib's CNN on a rescaled copy (detect_cnn_rescaled; its own
  confidence threshold): heavy blur and turned heads defeat the Haar cascade, not the CNN."""
  found, rejected = detect_checked(image, detector, min_confidence, check)
  method = detector
  if not found and fallback:
    found, more = detect_cnn_rescaled(image, check)
    rejected, method = rejected + more, "cnn"
  return [(to_haar_box(b, method), c) for b, c in found], rejected, method


def detect_checked(image, method: str = "haar", min_confidence: float | None = None,
                   check: bool = True, upsample: int = 1):
  """Detection with a confidence threshold (None: MIN_CONFIDENCE[method]) and, below
  SURE_CONFIDENCE[method], the landmark check (an eye in the box's upper part, eye_check). Returns (faces [(box,
  confidence)] most confident / largest first, rejected [(box, reason)])."""
  threshold = MIN_CONFIDENCE[method] if min_confidence is None else float(min_confidence)
  faces, rejected = [], []
  for box, conf in detect(image, method, upsample):
    reason = (f"low confidence ({conf:.3g} < {threshold:g}, --min_confidence)"
              if conf < threshold else None)
    if reason is None and check and conf < SURE_CONFIDENCE[method]:
      reason = faces_crop.eye_check(image, box)
    if reason is None:
      faces.append((tuple(box), conf))
    else:
      rejected.append((tuple(box), reason))
  return faces, rejected


# --- crop and paste back (the deblur command) ---------------------------------------------------

def crop_face(image, box, margin: float, size: int):
  """Square crop of side margin x max(w, h) around the box centre, resized to size x size, as the
  dataset builders crop (input_pipeline.datasets.common.align); returns (crop, 2x3 matrix from
  image to crop coordinates)."""
  center_x, center_y, side = faces_crop.alignment_from_box(box, margin)
  mat = faces_crop.crop_matrix((center_x, center_y), side, size)
  return faces_crop.warp(image, mat, size), mat


def feather_mask(size: int, feather: float = 0.15) -> np.ndarray:
  """[size, size] float32 weights: 1 in the centre, falling linearly to 0 over `feather` x size
  pixels at each border (0 exactly on the outermost pixels)."""
  ramp = max(1.0, feather * size)
  d = np.arange(size, dtype=np.float32)
  edge = np.minimum(d, size - 1 - d)  # distance to the nearest border, pixels
  w = np.clip(edge / ramp, 0.0, 1.0)
  return np.minimum(w[:, None], w[None, :])


def paste_back(image, crop, mat, feather: float = 0.15, source_crop=None):
  """Blends `crop` (uint8 or float in [0, 1], size x size) back into `image` (uint8 or uint16,
  which keeps its depth) through the inverse of `mat` with a feathered mask. With `source_crop` (the crop the model saw), only the
  model's change `crop - source_crop` is warped back and added ("residual" paste): detail of a
  face larger than the model's resolution is kept instead of being replaced by an upsampled
  crop. Pixels outside the warped mask's support are returned unchanged (bit-exact); returns a
  new image of image's dtype."""
  top = float(np.iinfo(image.dtype).max)  # 255 or 65535
  size = crop.shape[0]
  h, w = image.shape[:2]
  inv = cv2.invertAffineTransform(np.asarray(mat, np.float64))
  mask = cv2.warpAffine(feather_mask(size, feather), inv, (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  m = mask[..., None]
  if source_crop is not None:
    delta = _unit(crop) - _unit(source_crop)
    warped = cv2.warpAffine(delta, inv, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).reshape(image.shape)
    out = image.astype(np.float32) + top * m * warped
  else:
    warped = cv2.warpAffine(np.ascontiguousarray(_unit(crop)), inv, (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped = warped.reshape(image.shape) * top
    out = image.astype(np.float32) * (1.0 - m) + warped * m
  out = np.clip(out + 0.5, 0, top).astype(image.dtype)
  return np.where(m > 0, out, image)


def _unit(x) -> np.ndarray:
  """uint8 or float image -> float32 in [0, 1]."""
  x = np.asarray(x)
  return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def pasted_region(shape, mat, size: int, feather: float = 0.15) -> np.ndarray:
  """bool [H, W]: the pixels paste_back may change for a crop of `mat` (the mask's support)."""
  inv = cv2.invertAffineTransform(np.asarray(mat, np.float64))
  mask = cv2.warpAffine(feather_mask(size, feather), inv, (shape[1], shape[0]),
                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return mask > 0
