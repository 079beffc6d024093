"""What the `face_images` and `face_videos` builders share: the builder config, the split rule,
file discovery, image decoding/encoding, face alignment and the build report.

Split rule: every example belongs to a *group* (an identity or a video): the first path component
below `manual_dir` (a top-level folder, or a top-level file on its own). A group is in the test
split iff sha1("{split_salt}/{group}") maps below `test_fraction`; so frames of one video and
photos of one identity never straddle train and test, and the assignment of a group does not
depend on the order of files. When the hash puts no group into test (tiny datasets) and there
are at least two groups, the group with the smallest hash is moved to test (and symmetrically
for train), so both splits exist.
"""
import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import threading
from collections import Counter

import cv2
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from fdeblur import errors
from input_pipeline import faces_crop

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v")
SIDECAR_EXTS = (".pts", ".json", ".txt", ".csv", ".md", ".mat", ".xml", ".ljson")
NUM_LANDMARKS = 68
REPORT_NAME = "build_report"  # build_report.json / build_report.txt beside the array_record files


def option(default, help_text: str):
  """A dataclass field with its command-line help: `define_flags` makes it a flag."""
  return dataclasses.field(default=default, metadata={"help": help_text})


def define_flags(cls, flag_values=None, skip=()) -> list[str]:
  """An absl flag per field of dataclass `cls` declared with `option` (not in `skip`), with the
  field's default, type and help; returns the flag names. Command-line tools derive their
  flags from the dataclass this way instead of repeating them."""
  import sys  # pylint: disable=import-outside-toplevel

  from absl import flags  # pylint: disable=import-outside-toplevel
  flag_values = flags.FLAGS if flag_values is None else flag_values
  # listed under the calling program in --help (absl names __main__ by its file)
  module = sys._getframe(1).f_globals.get("__name__")  # pylint: disable=protected-access
  module = sys.argv[0] if module == "__main__" else module
  define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
            str: flags.DEFINE_string}
  names = []
  for f in dataclasses.fields(cls):
    if "help" not in f.metadata or f.name in skip:
      continue
    define[type(f.default)](f.name, f.default, f.metadata["help"], flag_values=flag_values,
                            module_name=module)
    names.append(f.name)
  return names


@dataclasses.dataclass
class FaceConfig(tfds.core.BuilderConfig):
  """Options of the face builders (any of them may be set as a `config.dataset` field)."""
  image_size: int = 128
  margin: float = option(1.6, "Crop side / longer side of the landmark extent or detector box.")
  test_fraction: float = option(0.1, "Fraction of groups (identities / videos) in the test split.")
  split_salt: str = option("", "Salt of the split hash: change it to draw another split.")
  image_format: str = option("png", "How crops are stored: png (lossless), jpeg, raw (uint8).")
  jpeg_quality: int = option(95, "JPEG quality with image_format=jpeg.")
  min_face: int = option(24, "Smallest face (pixels) the detector looks for.")
  min_votes: int = option(0, "Detections need at least this many cascade votes (0 = the "
                          "cascades' own thresholds).")
  face_check: str = option("eyes", "Landmark check of detections: eyes (an eye in the box's "
                           "upper part, faces_crop.eye_check, for detections below "
                           "faces_crop.SURE_VOTES votes) or none.")


def config_name(image_size: int, overrides: dict) -> str:
  """'128px', or '128px_margin1.8_test_fraction0.2' for non-default options; a value that is not
  a plain word (a folder path) is named by a short hash of it."""
  def word(v):
    v = str(v)
    return v if re.fullmatch(r"[\w.\-]*", v) else hashlib.sha1(v.encode()).hexdigest()[:10]

  return "_".join([f"{image_size}px"] + [f"{k}{word(v)}" for k, v in sorted(overrides.items())])


def base_config_fields() -> set[str]:
  return {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


# --- splits -------------------------------------------------------------------------------------

def group_of(relpath: str) -> str:
  """The identity/video a file belongs to: its top-level folder (or itself at the top level)."""
  return relpath.replace(os.sep, "/").split("/", 1)[0]


def _unit_hash(group: str, salt: str) -> float:
  digest = hashlib.sha1(f"{salt}/{group}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(groups, test_fraction: float, salt: str = "") -> dict[str, str]:
  """group -> 'train' | 'test' (see the module docstring)."""
  groups = sorted(set(groups))
  h = {g: _unit_hash(g, salt) for g in groups}
  out = {g: "test" if h[g] < test_fraction else "train" for g in groups}
  if len(groups) >= 2 and 0 < test_fraction < 1:
    if "test" not in out.values():
      out[min(groups, key=h.get)] = "test"
    if "train" not in out.values():
      out[max(groups, key=h.get)] = "train"
  return out


def split_items(items, group, cfg: "FaceConfig", report: "BuildReport", what: str) -> dict:
  """{split: [items]} over the groups that kept at least one item; a split without groups is
  left out (TFDS cannot write an empty split), with a note in the report."""
  split_of = assign_splits([group(i) for i in items], cfg.test_fraction, cfg.split_salt)
  by_split = {"train": [], "test": []}
  for item in items:
    by_split[split_of[group(item)]].append(item)
  report.groups = {s: len({group(i) for i in its}) for s, its in by_split.items()}
  for s in [s for s, its in by_split.items() if not its]:
    report.note(f"no {what} in the {s} split (too few {what}, or test_fraction)")
    del by_split[s]
  return by_split


def ordered_map(fn, items, threads: int = 0, window: int = 64):
  """map(fn, items) in order on a thread pool with at most `window` results pending (OpenCV
  releases the GIL in decoding, detection and warping, so threads run in parallel)."""
  threads = threads or min(8, os.cpu_count() or 1)
  if threads <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


# --- files --------------------------------------------------------------------------------------

def walk(root: str, report: "BuildReport"):
  """os.walk in sorted order; reports empty folders; yields (dirpath, sorted files)."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    files = sorted(f for f in filenames if not f.startswith("."))
    if not files and not dirnames:
      report.skip(os.path.relpath(dirpath, root), "empty folder")
      continue
    yield dirpath, files


def read_image(path: str) -> np.ndarray | None:
  """RGB uint8 image, or None when the file cannot be decoded (also for non-ASCII paths)."""
  try:
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  except (OSError, cv2.error):
    return None
  if image is None or image.size == 0:
    return None
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_frames(path: str, max_frames: int = 0):
  """RGB uint8 frames of a video file, in order (at most `max_frames`; 0 = all). Nothing for a
  file OpenCV cannot open."""
  cap = cv2.VideoCapture(path)
  try:
    n = 0
    while cap.isOpened() and (not max_frames or n < max_frames):
      ok, frame = cap.read()
      if not ok:
        return
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
      n += 1
  finally:
    cap.release()


def encode(image: np.ndarray, cfg: FaceConfig):
  if cfg.image_format == "raw":
    return np.ascontiguousarray(image, np.uint8)
  bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  if cfg.image_format == "png":
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
  elif cfg.image_format == "jpeg":
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
  else:
    raise ValueError(f"image_format={cfg.image_format!r}: use png, jpeg or raw")
  if not ok:
    raise RuntimeError("image encoding failed")
  return buf.tobytes()


def decode(value) -> np.ndarray:
  """A stored image (encoded bytes or a uint8 tensor) -> RGB uint8 [S, S, 3]."""
  if isinstance(value, (bytes, np.bytes_)) or (isinstance(value, np.ndarray)
                                                 and value.dtype == object):
    data = value.item() if isinstance(value, np.ndarray) else value
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  return np.asarray(value, np.uint8)


def image_feature(cfg: FaceConfig):
  s = cfg.image_size
  if cfg.image_format == "raw":
    return tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8)
  return tfds.features.Tensor(shape=(), dtype=np.object_)  # encoded png/jpeg bytes


def face_features(cfg: FaceConfig) -> dict:
  return {
      "image": image_feature(cfg),
      # 68 points (x, y) in crop pixels, 0-based; zeros where has_landmarks is False
      "landmarks": tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
      "has_landmarks": tfds.features.Tensor(shape=(), dtype=np.bool_),
      # face box (x, y, w, h) in crop pixels: the landmarks' extent, or the detector's box
      "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "source": tfds.features.Text(),  # path below manual_dir
      "identity": tfds.features.Text(),  # the split group
  }


def detect(image, cfg: FaceConfig):
  """(faces [(box, votes)], rejected [(box, reason)]) of one image with the config's checks."""
  if cfg.face_check not in ("eyes", "none"):
    raise ValueError(f"face_check={cfg.face_check!r}: use eyes or none")
  return faces_crop.detect_checked(image, min_size=cfg.min_face, min_votes=cfg.min_votes,
                                   check=cfg.face_check == "eyes")


def rejection_text(rejected) -> str:
  """'no face passed the checks (2 candidates: no eye found ...)'."""
  reasons = sorted({r for _, r in rejected})
  return (f"no face passed the checks ({len(rejected)} candidate"
          f"{'s' if len(rejected) > 1 else ''} rejected: {'; '.join(reasons)})")


# --- alignment ----------------------------------------------------------------------------------

def align(points: np.ndarray | None, box, margin: float):
  """(cx, cy, side) from landmarks when known, else from a detector/tracker box."""
  if points is not None:
    return faces_crop.alignment_from_landmarks(points, margin)
  return faces_crop.alignment_from_box(box, margin)


def crop_example(image, alignment, points, box, cfg: FaceConfig) -> dict:
  """The stored fields of one face: crop, landmarks and box mapped into crop coordinates."""
  cx, cy, side = alignment
  mat = faces_crop.crop_matrix((cx, cy), side, cfg.image_size)
  crop = faces_crop.warp(image, mat, cfg.image_size)
  if points is not None:
    pts = faces_crop.transform_points(points, mat)
    lo, hi = pts.min(0), pts.max(0)
    crop_box = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32)
  else:
    crop_box = faces_crop.transform_box(box, mat)
  has = points is not None and len(points) == NUM_LANDMARKS
  return {
      "image": encode(crop, cfg),
      "landmarks": pts if has else np.zeros((NUM_LANDMARKS, 2), np.float32),
      "has_landmarks": bool(has),
      "box": crop_box,
  }


# --- report -------------------------------------------------------------------------------------

class BuildReport:
  """What was skipped and why; written next to the dataset as build_report.{json,txt}."""

  def __init__(self, name: str):
    self.name = name
    self.skipped: list[dict] = []
    self.notes: Counter = Counter()
    self.examples: Counter = Counter()
    self.groups: dict[str, int] = {}
    self._lock = threading.Lock()  # builders plan files on a thread pool

  def skip(self, path: str, reason: str, split: str = "") -> None:
    with self._lock:
      self.skipped.append({"path": path, "reason": reason, "split": split})
    logging.info("%s: skipped %s (%s)", self.name, path, reason)

  def note(self, what: str, n: int = 1) -> None:
    with self._lock:
      self.notes[what] += n

  def as_dict(self) -> dict:
    self.skipped.sort(key=lambda s: s["path"])
    return {"dataset": self.name, "examples": dict(self.examples), "groups": self.groups,
            "skipped_counts": dict(Counter(s["reason"] for s in self.skipped)),
            "notes": dict(self.notes), "skipped": self.skipped}

  def text(self) -> str:
    d = self.as_dict()
    lines = [f"{self.name}: " + ", ".join(f"{k} {v} examples" for k, v in d["examples"].items())
             + " (groups: " + ", ".join(f"{k} {v}" for k, v in d["groups"].items()) + ")"]
    if d["skipped"]:
      lines.append(f"skipped {len(d['skipped'])}: " + ", ".join(
          f"{n} {r}" for r, n in sorted(d["skipped_counts"].items())))
      lines += [f"  {s['path']}: {s['reason']}" for s in d["skipped"][:50]]
      if len(d["skipped"]) > 50:
        lines.append(f"  ... and {len(d['skipped']) - 50} more (see {REPORT_NAME}.json)")
    else:
      lines.append("skipped nothing")
    lines += [f"note: {k}: {v}" for k, v in sorted(d["notes"].items())]
    return "\n".join(lines)

  def write(self, directory) -> None:
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, REPORT_NAME + ".json"), "w") as f:
      json.dump(self.as_dict(), f, indent=1)
    with open(os.path.join(directory, REPORT_NAME + ".txt"), "w") as f:
      f.write(self.text() + "\n")


def nothing_usable(name: str, root: str, what: str, report: BuildReport) -> "errors.DataError":
  """The one-line error of a build that kept nothing, with the skip reasons counted."""
  counts = report.as_dict()["skipped_counts"]
  reasons = ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) or "nothing to read"
  return errors.DataError(f"{name}: no usable {what} under --manual_dir {root} ({reasons})")


def read_report(data_dir) -> dict | None:
  path = os.path.join(os.fspath(data_dir), REPORT_NAME + ".json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
