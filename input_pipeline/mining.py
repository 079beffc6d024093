"""Mining face clips from raw videos, the 2017 paper's Sec. 4 (Chrysos & Zafeiriou, Alg. 1):

  python -m input_pipeline.mining --videos DIR --out DIR

For every video (.mp4 .avi .mov .mkv ... or a folder of frames) below --videos:
 1. detect a face in the first frame (OpenCV Haar; the paper: DPM); no face -> rejected;
 2. track it through the video with a model-free tracker (OpenCV's MIL tracker, the one
    model-free tracker in opencv-python-headless 4.14 that needs no downloaded weights; the paper:
    SRDCF) and run the detector in every frame around the tracked box; the tracker and detector
    boxes must overlap with IoU >= --min_iou (0.5) in at least --min_iou_fraction (half) of the
    frames, otherwise the video is rejected;
 3. localise landmarks with a pluggable landmarker (--landmarker): `dlib` (68 points, dlib's
    shape predictor, needs the `dlib-bin` and `face-recognition-models` packages), `none` (the
    fallback while no 68-point landmarker is installed: the tracked box is the face's shape),
    `auto` (dlib when importable, else none), or `package.module:factory` of your own (a
    callable (rgb_frame, box) -> [68, 2] array or None);
 4. reject erroneous fittings per frame: the paper's linear patch SVM on SIFT patches around the
    landmarks is replaced by its generic variant that the paper itself names (Sec. 4, last
    paragraph: "accept the whole bounding box instead of the patch-based SVM"): a linear SVM on
    HOG features of the tracked box, trained on the face / non-face patches that scikit-image
    ships (`lfw_subset`, 100 + 100, with flips and small shifts); frames it rejects (score below
    --classifier_threshold) are dropped; with landmarks, frames whose landmarks fall outside
    the tracked box are dropped too;
 5. require motion: OpenCV Farnebaeck optical flow between consecutive accepted frames on the
    face region; a pair moves if the mean flow magnitude is >= --min_motion pixels (the paper:
    "at least a pixel movement from frame to frame"); a video whose mean motion exceeds
    --max_motion is rejected;
 6. accepted clips are the runs of at least --min_clip_frames consecutive accepted, moving
    frames; they are written in the face_videos layout:
      OUT/<video>/clip_000/000001.png ...   frames (numbered by source frame, 1-based)
      OUT/<video>/clip_000/boxes.json       {"000001.png": [x, y, w, h], ...} tracked boxes
      OUT/<video>/clip_000/annot/000001.pts 68 landmarks (when a landmarker is used)
    so that `python -m input_pipeline.build --dataset=face_videos --manual_dir=OUT` builds them
    (clips of one video share a split);
 7. OUT/mining_report.json and .txt list every video, accepted or rejected, with the reason and
    the measurements.
"""
import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import shutil
from collections import Counter

import cv2
import numpy as np
import tqdm
from absl import app, flags, logging

from input_pipeline import faces_crop
from input_pipeline.datasets import common


@dataclasses.dataclass
class MiningConfig:
  min_iou: float = common.option(0.5, "Detector/tracker IoU that counts as agreement.")
  min_iou_fraction: float = common.option(0.5, "Fraction of frames that must agree.")
  min_motion: float = common.option(1.0, "Pixels of face motion between frames (mean flow).")
  max_motion: float = common.option(40.0, "Mean px/frame above which a video is dropped.")
  min_clip_frames: int = common.option(8, "Shortest clip written.")
  classifier_threshold: float = common.option(0.0, "Face classifier threshold.")
  landmarker: str = common.option("auto", "auto | dlib | none | package.module:factory")
  max_frames: int = common.option(0, "Frames read per video (0 = all).")
  detect_max_side: int = common.option(640, "Frames are downscaled to this side for detection.")
  min_face: int = common.option(24, "Smallest face (pixels) the detector looks for.")
  flow_size: int = common.option(96, "The face region is resized to this for optical flow.")


# --- frames -------------------------------------------------------------------------------------

def find_videos(root: str) -> list[str]:
  """Video files and folders of frames below root (relative paths, sorted)."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel = os.path.relpath(dirpath, root)
    if any(f.lower().endswith(common.IMAGE_EXTS) for f in filenames):
      found.append(rel)
    found += [os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames)
              if f.lower().endswith(common.VIDEO_EXTS)]
  return sorted(found)


def iter_frames(path: str, max_frames: int = 0):
  """RGB frames of a video file or a folder of frames, in order."""
  limit = max_frames or None
  if os.path.isdir(path):
    names = sorted(f for f in os.listdir(path) if f.lower().endswith(common.IMAGE_EXTS))
    for name in names[:limit]:
      frame = common.read_image(os.path.join(path, name))
      if frame is None:
        return
      yield frame
    return
  yield from common.video_frames(path, max_frames)


# --- tracker ------------------------------------------------------------------------------------

def make_tracker():
  """OpenCV's MIL tracker (model-free, no weights to download)."""
  return cv2.TrackerMIL_create()


# --- landmarkers --------------------------------------------------------------------------------

class DlibLandmarker:
  """68 points from dlib's shape predictor (Kazemi & Sullivan, as the 2017 paper's Sec. 3.4)."""

  def __init__(self):
    import dlib  # noqa: PLC0415  (optional [faces] extra)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
      raise ImportError("face_recognition_models is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "models",
                        "shape_predictor_68_face_landmarks.dat")
    self._dlib = dlib
    self._predictor = dlib.shape_predictor(path)

  def __call__(self, frame, box):
    x, y, w, h = box
    rect = self._dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
    shape = self._predictor(np.ascontiguousarray(frame), rect)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def make_landmarker(name: str):
  """None (box only) or a callable (rgb_frame, box) -> [68, 2] points or None."""
  if name == "none":
    return None
  if name in ("dlib", "auto"):
    try:
      return DlibLandmarker()
    except (ImportError, RuntimeError) as e:
      if name == "dlib":
        raise
      logging.warning("no 68-point landmarker installed (%s): mining with boxes only", e)
      return None
  module, _, attr = name.partition(":")
  if not attr:
    raise ValueError(f"--landmarker={name!r}: use auto, dlib, none or package.module:factory")
  return getattr(importlib.import_module(module), attr)()


# --- fitting classifier -------------------------------------------------------------------------

PATCH = 32


def _hog(gray_patch: np.ndarray) -> np.ndarray:
  from skimage.feature import hog  # noqa: PLC0415
  p = cv2.resize(gray_patch.astype(np.float32), (PATCH, PATCH), interpolation=cv2.INTER_AREA)
  return hog(p, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
             feature_vector=True).astype(np.float32)


class FaceClassifier:
  """Linear SVM (squared hinge, L2) on HOG features of a face box: face vs. not a face.
  Trained on scikit-image's lfw_subset (25x25 face crops and non-face patches)."""

  def __init__(self, seed: int = 0, steps: int = 600, lam: float = 1e-3):
    from skimage import data  # noqa: PLC0415
    lfw = data.lfw_subset()
    labels = np.r_[np.ones(100), -np.ones(100)]
    rng = np.random.default_rng(seed)
    feats, ys = [], []
    for image, y in zip(lfw, labels):
      for k in range(6):  # flips and small scale/shift perturbations
        im = image[:, ::-1] if k % 2 else image
        s = rng.uniform(0.9, 1.1)
        tx, ty = rng.uniform(-1.5, 1.5, 2)
        c = (im.shape[0] - 1) / 2
        mat = np.array([[s, 0, (1 - s) * c + tx], [0, s, (1 - s) * c + ty]], np.float32)
        feats.append(_hog(cv2.warpAffine(im.astype(np.float32), mat, im.shape[::-1],
                                         borderMode=cv2.BORDER_REFLECT)))
        ys.append(y)
    x, y = np.stack(feats), np.asarray(ys, np.float32)
    self.mean, self.std = x.mean(0), x.std(0) + 1e-6
    z = (x - self.mean) / self.std
    w, b = np.zeros(z.shape[1], np.float32), 0.0
    for _ in range(steps):  # full-batch gradient descent on the squared hinge loss
      a = np.maximum(0.0, 1.0 - y * (z @ w + b))
      w -= 0.1 * (-(2 * a * y) @ z / len(y) + lam * w)
      b -= 0.1 * -(2 * a * y).mean()
    self.w, self.b = w, float(b)

  def score(self, frame: np.ndarray, box) -> float:
    """> 0: the box holds a face."""
    x, y, w, h = box
    side = max(w, h)
    gray = faces_crop.to_gray_u8(frame).astype(np.float32) / 255.0
    patch = faces_crop.square_crop(gray, (x + w / 2, y + h / 2), side, PATCH)
    return float(((_hog(patch) - self.mean) / self.std) @ self.w + self.b)


@functools.cache
def face_classifier() -> FaceClassifier:
  return FaceClassifier()


# --- one video ----------------------------------------------------------------------------------

def _detect_near(frame, box, cfg: MiningConfig):
  """Detector boxes in a region twice the tracked box (the whole frame when lost)."""
  if box is None:
    return faces_crop.detect_faces_scaled(frame, cfg.detect_max_side, cfg.min_face)
  x, y, w, h = box
  side = 2.0 * max(w, h)
  x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
  x1, y1 = int(min(frame.shape[1], x0 + side)), int(min(frame.shape[0], y0 + side))
  if x1 - x0 < cfg.min_face or y1 - y0 < cfg.min_face:
    return []
  found = faces_crop.detect_faces_scaled(frame[y0:y1, x0:x1], cfg.detect_max_side, cfg.min_face)
  return [(bx + x0, by + y0, bw, bh) for bx, by, bw, bh in found]


def _motion(prev_gray, gray, box, cfg: MiningConfig) -> float:
  """Mean Farnebaeck flow magnitude (frame pixels) over the face region."""
  x, y, w, h = box
  side = 1.25 * max(w, h)
  mat = faces_crop.crop_matrix((x + w / 2, y + h / 2), side, cfg.flow_size)
  a = faces_crop.warp(prev_gray, mat, cfg.flow_size)
  b = faces_crop.warp(gray, mat, cfg.flow_size)
  flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
  return float(np.linalg.norm(flow, axis=-1).mean() * side / cfg.flow_size)


def analyse(path: str, cfg: MiningConfig, landmarker=None) -> dict:
  """Runs steps 1-6 on one video; returns its record (status, reason, measurements, clips)."""
  record = {"status": "rejected", "reason": "", "frames": 0}
  frames = iter_frames(path, cfg.max_frames)
  first = next(frames, None)
  if first is None:
    record["reason"] = "unreadable video"
    return record
  found = faces_crop.detect_faces_scaled(first, cfg.detect_max_side, cfg.min_face)
  if not found:
    record.update(frames=1, reason="no face detected in the first frame")
    return record
  tracker = make_tracker()
  box = tuple(int(round(v)) for v in found[0])
  tracker.init(cv2.cvtColor(first, cv2.COLOR_RGB2BGR), box)
  classifier = face_classifier()
  boxes, ious, scores, points, ok_fit = [], [], [], [], []
  motions = []  # motion between frame t-1 and t (None when either is not accepted)
  prev_gray, prev_ok = None, False
  t = 0
  frame = first
  while frame is not None:
    if t > 0:
      ok, tracked = tracker.update(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
      box = tuple(float(v) for v in tracked) if ok and tracked[2] > 0 and tracked[3] > 0 else None
      dets = _detect_near(frame, box, cfg)
      overlap = max((faces_crop.iou(box, d) for d in dets), default=0.0) if box else 0.0
    else:
      box, overlap = tuple(float(v) for v in box), 1.0
    boxes.append(box)
    ious.append(overlap)
    score, pts, fit = -np.inf, None, False
    if box is not None:
      score = classifier.score(frame, box)
      if landmarker is not None:
        pts = landmarker(frame, box)
      fit = score > cfg.classifier_threshold
      if pts is not None:  # landmarks must lie on the tracked face
        cx, cy = pts.mean(0)
        fit &= box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]
    scores.append(score)
    points.append(pts)
    ok_fit.append(bool(fit))
    gray = faces_crop.to_gray_u8(frame)
    motions.append(_motion(prev_gray, gray, box, cfg) if fit and prev_ok else None)
    prev_gray, prev_ok = gray, fit
    t += 1
    frame = next(frames, None)
  n = len(boxes)
  agree = float(np.mean(np.asarray(ious) >= cfg.min_iou))
  moving = [m for m in motions if m is not None]
  record.update(frames=n, iou_fraction=round(agree, 3),
                accepted_fit_fraction=round(float(np.mean(ok_fit)), 3),
                mean_motion=round(float(np.mean(moving)), 3) if moving else 0.0)
  if agree < cfg.min_iou_fraction:
    record["reason"] = (f"detector/tracker IoU >= {cfg.min_iou} in {100 * agree:.0f}% of frames "
                        f"(< {100 * cfg.min_iou_fraction:.0f}%)")
    return record
  if moving and np.mean(moving) > cfg.max_motion:
    record["reason"] = f"too much motion ({np.mean(moving):.1f} > {cfg.max_motion} px/frame)"
    return record
  # clips: runs of accepted frames, each (after the first) moving w.r.t. the previous one
  clips, run = [], []
  for i in range(n):
    if ok_fit[i] and run and motions[i] is not None and motions[i] >= cfg.min_motion:
      run.append(i)
    else:
      if len(run) >= cfg.min_clip_frames:
        clips.append(run)
      run = [i] if ok_fit[i] else []
  if len(run) >= cfg.min_clip_frames:
    clips.append(run)
  if not clips:
    if np.mean(ok_fit) < 0.5:
      reason = "the face classifier rejected most tracked boxes (bad fittings)"
    elif not moving or max(moving) < cfg.min_motion:
      reason = f"static face (no motion >= {cfg.min_motion} px between frames)"
    else:
      reason = f"no run of {cfg.min_clip_frames} consecutive accepted, moving frames"
    record["reason"] = reason
    return record
  record.update(status="accepted", reason="",
                clips=[[c[0], c[-1]] for c in clips],
                accepted_frames=int(sum(len(c) for c in clips)))
  record["_boxes"], record["_points"] = boxes, points
  return record


def write_clips(path: str, record: dict, out_dir: str, max_frames: int = 0) -> list[str]:
  """Second pass over the video: writes the accepted clips in the face_videos layout."""
  spans = record["clips"]
  clip_of = {i: k for k, (a, b) in enumerate(spans) for i in range(a, b + 1)}
  dirs = [os.path.join(out_dir, f"clip_{k:03d}") for k in range(len(spans))]
  boxes = [{} for _ in spans]
  for i, frame in enumerate(iter_frames(path, max_frames)):
    if i > spans[-1][1]:
      break
    if i not in clip_of:
      continue
    k = clip_of[i]
    os.makedirs(dirs[k], exist_ok=True)
    name = f"{i + 1:06d}.png"
    cv2.imwrite(os.path.join(dirs[k], name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    boxes[k][name] = [round(float(v), 2) for v in record["_boxes"][i]]
    pts = record["_points"][i]
    if pts is not None:
      os.makedirs(os.path.join(dirs[k], "annot"), exist_ok=True)
      faces_crop.write_pts(os.path.join(dirs[k], "annot", f"{i + 1:06d}.pts"), pts)
  for k, d in enumerate(dirs):
    if boxes[k]:
      with open(os.path.join(d, "boxes.json"), "w") as f:
        json.dump(boxes[k], f, indent=0)
  return [d for k, d in enumerate(dirs) if boxes[k]]


def video_id(rel: str) -> str:
  """A folder name for a video: its path below --videos without extension, '/' -> '__'."""
  rel = rel.replace(os.sep, "/")
  stem = rel if rel.endswith("/") else os.path.splitext(rel)[0]
  return stem.strip("./").replace("/", "__") or "video"


def mine(videos_dir: str, out_dir: str, cfg: MiningConfig | None = None,
         landmarker=None, progress: bool = True) -> dict:
  """Mines every video below `videos_dir` into `out_dir`; returns (and writes) the report."""
  cfg = cfg or MiningConfig()
  if landmarker is None:
    landmarker = make_landmarker(cfg.landmarker)
  os.makedirs(out_dir, exist_ok=True)
  entries = []
  for rel in tqdm.tqdm(find_videos(videos_dir), desc="mining", unit="video",
                       disable=not progress, mininterval=1.0):
    path = os.path.join(videos_dir, rel)
    try:
      record = analyse(path, cfg, landmarker)
    except cv2.error as e:  # a broken stream must not stop the run
      record = {"status": "rejected", "reason": f"OpenCV error: {str(e).strip()[:200]}",
                "frames": 0}
    record = {"video": rel.replace(os.sep, "/"), **record}
    if record["status"] == "accepted":
      target = os.path.join(out_dir, video_id(rel))
      shutil.rmtree(target, ignore_errors=True)
      record["written"] = [os.path.relpath(d, out_dir).replace(os.sep, "/")
                           for d in write_clips(path, record, target, cfg.max_frames)]
    record.pop("_boxes", None)
    record.pop("_points", None)
    entries.append(record)
  report = {
      "config": dataclasses.asdict(cfg),
      "landmarker": type(landmarker).__name__ if landmarker is not None else "none (boxes only)",
      "tracker": "OpenCV TrackerMIL",
      "accepted": sum(e["status"] == "accepted" for e in entries),
      "rejected": sum(e["status"] == "rejected" for e in entries),
      "reasons": dict(Counter(e["reason"] for e in entries if e["status"] == "rejected")),
      "accepted_frames": int(sum(e.get("accepted_frames", 0) for e in entries)),
      "videos": entries,
  }
  with open(os.path.join(out_dir, "mining_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(out_dir, "mining_report.txt"), "w") as f:
    f.write(report_text(report) + "\n")
  return report


def report_text(report: dict) -> str:
  lines = [f"accepted {report['accepted']} videos ({report['accepted_frames']} frames), "
           f"rejected {report['rejected']}; landmarker: {report['landmarker']}"]
  for e in report["videos"]:
    if e["status"] == "accepted":
      lines.append(f"  ACCEPT {e['video']}: {len(e['clips'])} clips, {e['accepted_frames']} "
                   f"of {e['frames']} frames, mean motion {e['mean_motion']} px/frame")
    else:
      lines.append(f"  REJECT {e['video']}: {e['reason']}")
  return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------

def define_flags(flag_values=None) -> list[str]:
  """The CLI flags: --videos, --out and one per MiningConfig field (defined only when run as a
  program, so importing this module defines none). Returns the MiningConfig flag names."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("videos", None, "Folder of videos (or of frame folders) to mine.",
                      flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output folder (face_videos layout + mining_report).",
                      flag_values=flag_values)
  return common.define_flags(MiningConfig, flag_values)


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.videos or not f.out:
    raise app.UsageError("--videos and --out are required")
  cfg = MiningConfig(**{k.name: getattr(f, k.name) for k in dataclasses.fields(MiningConfig)})
  report = mine(f.videos, f.out, cfg)
  print(report_text(report))
  print(f"report: {os.path.join(f.out, 'mining_report.json')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
