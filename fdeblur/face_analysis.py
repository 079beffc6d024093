"""Face metrics with dlib (the `[faces]` extra): the 68-point landmark error normalised by the
ground-truth box diagonal (CED, AUC up to 0.08, failure rate; Chrysos et al. 2019 Sec. 5.4), the
identity cosine similarity of dlib's 128-d embeddings (2019 Fig. 11-12) and the face-detection
failure rate and mean confidence of dlib's HOG (or CNN) detector (Fan & Luo Table 1).
Ground-truth landmarks are the dataset's where it has them, else the landmarker's output on the
sharp image (so the oracle row is perfect by construction).
"""
import numpy as np
from absl import logging

from fdeblur import metrics

ANALYSIS_SIZE = 256  # faces are enlarged to this many pixels before dlib sees them


def enabled(config) -> bool:
  setting = str(config.eval.faces)
  if setting in ("none", "off", "false", "False"):
    return False
  from fdeblur import faces  # pylint: disable=import-outside-toplevel
  if setting == "auto":
    ok = faces.available()
    if not ok:
      logging.warning("evaluation without landmark/identity/detection metrics: %s",
                      faces.INSTALL_HINT)
    return ok
  faces.load()  # "dlib": raise the install hint if missing
  return True


def to_u8(images):
  return np.clip(np.asarray(images, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class FaceAnalysis:
  """dlib on images enlarged to ANALYSIS_SIZE: 68 points in the ground-truth box, the identity
  embedding, and whether the HOG detector finds a face centred inside the ground-truth box."""

  def __init__(self, config, data: dict):
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    self.dlib = faces.load()
    self.detector = str(config.eval.detector)
    size = data["image"].shape[1]
    self.scale = max(1.0, ANALYSIS_SIZE / size)
    if "box" in data:
      boxes = np.asarray(data["box"], np.float64)
    else:  # the crop is centred on the face with the dataset's margin
      margin = float(config.dataset.margin)
      side = size / margin
      boxes = np.tile([(size - side) / 2, (size - side) / 2, side, side], (len(data["image"]), 1))
    self.boxes = boxes * self.scale
    self.gt = None
    if "landmarks" in data and "has_landmarks" in data:
      self.gt_annotated = (np.asarray(data["landmarks"], np.float64) * self.scale,
                           np.asarray(data["has_landmarks"], bool))
    else:
      self.gt_annotated = None

  def _enlarge(self, image_u8):
    if self.scale == 1.0:
      return image_u8
    import cv2  # pylint: disable=import-outside-toplevel
    n = int(round(image_u8.shape[0] * self.scale))
    return cv2.resize(image_u8, (n, n), interpolation=cv2.INTER_CUBIC)

  def analyse(self, images) -> dict:
    pts, emb, det, conf = [], [], [], []
    for img, box in zip(to_u8(images), self.boxes):
      big = self._enlarge(img)
      pts.append(self.dlib.landmarks(big, box))
      emb.append(self.dlib.embedding(big, box))
      x, y, w, h = box
      found = [s for (bx, by, bw, bh), s in self.dlib.detect(big, self.detector, 0)
               if x <= bx + bw / 2 <= x + w and y <= by + bh / 2 <= y + h]
      det.append(bool(found))
      conf.append(max(found) if found else 0.0)
    return {"landmarks": np.stack(pts), "embedding": np.stack(emb),
            "detected": np.array(det), "confidence": np.array(conf)}

  def ground_truth(self, sharp_analysis) -> np.ndarray:
    gt = sharp_analysis["landmarks"].astype(np.float64)
    if self.gt_annotated is not None:
      points, has = self.gt_annotated
      gt = np.where(has[:, None, None], points, gt)
    return gt


def face_rows(analysis, gt, sharp_emb) -> dict:
  err = metrics.landmark_error(analysis["landmarks"], gt)
  ident = metrics.cosine_similarity(analysis["embedding"], sharp_emb)
  det = metrics.detection_summary(analysis["detected"], analysis["confidence"])
  lm = metrics.summarize_landmarks(err)
  # 300W's convention (outer-eye-corner distance), for comparison with landmark papers.
  iod = metrics.landmark_error(analysis["landmarks"], gt, "interocular")
  summary = {"landmark_auc": lm["auc"], "landmark_failure": lm["failure_rate"],
             "landmark_error": lm["mean_error"],
             "landmark_error_interocular": float(np.mean(iod[np.isfinite(iod)]))
             if np.isfinite(iod).any() else float("nan"),
             "identity": float(np.nanmean(ident)),
             "detection_failure": det["failure_rate"],
             "detection_confidence": det["mean_confidence"]}
  return summary, err, ident
