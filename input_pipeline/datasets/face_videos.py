"""`face_videos`: face videos (VoxCeleb, YouTube Faces, 300VW, clips written by
`input_pipeline.mining`) stored as per-frame aligned face crops that training draws as single
frames or as clips of T consecutive frames.

manual_dir layout, any mix of:
  * video files (.mp4 .avi .mov .mkv .webm .mpg .m4v; decoded with OpenCV). 300VW: `NNN/vid.avi`
    with `NNN/annot/000001.pts` ... (68 points, 1-based, one file per frame, numbered from 1):
    a folder holding a single video and an `annot/` folder gives that video its landmarks;
  * folders of frames (images sorted by name; numeric names such as 000123.png give the frame
    numbers, and a gap in the numbers breaks the sequence), with optional `<frame>.pts` beside
    each frame or in `annot/`, and optional `boxes.json` ({"000123.png": [x, y, w, h]}) as the
    mining tool writes.
A video is grouped by its top-level entry below manual_dir (300VW: `NNN`; mining output:
`<video>/clip_*` share `<video>`); splits are by group, never by frame.

Alignment per frame: the frame's landmarks, else its given box, else OpenCV's Haar detector (the
face that overlaps the previous frame's most, among those passing the vote threshold and the eye
check, see `common.detect`). The square crop (centre and side, as in the 2017
paper: landmark/box extent x `margin`) is smoothed along time with a Gaussian of
`temporal_smoothing` frames so that the crop window moves slowly: the face's own motion within a
short clip stays in the crops (frame averaging needs it), the detector's jitter does not.
Landmarks and boxes are mapped into each frame's crop exactly.

Examples are stored in frame order (`disable_shuffling`); `info.metadata["segments"][split]`
lists [first record, length] of every run of consecutive frames, which the grain pipeline's clip
sampler reads. Unreadable videos, videos without a face and empty folders are skipped and listed
in build_report.json.
"""
import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from scipy import ndimage

from fdeblur import errors
from input_pipeline import faces_crop
from input_pipeline.datasets import common


@dataclasses.dataclass
class FaceVideosConfig(common.FaceConfig):
  temporal_smoothing: float = common.option(
      8.0, "face_videos: Gaussian sigma (frames) of the crop trajectory; 0 = per frame.")
  max_frames: int = common.option(0, "face_videos: frames read per video (0 = all).")


JUMP_IOU = 0.3  # a detection overlapping the previous frame's face less than this starts anew


class FaceVideos(tfds.core.GeneratorBasedBuilder):
  """Per-frame face crops of videos, with clip (segment) indices for T-frame sampling."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Videos and frame folders (300VW layout), segments metadata.",
                   "1.1.0": "Detections pass a vote threshold and the eye (landmark) check; "
                            "the source folder is recorded (build_source.json)."}
  BUILDER_CONFIGS = [FaceVideosConfig(name=f"{s}px", image_size=s) for s in (64, 128, 256)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass --manual_dir=DIR: videos (.mp4/.avi/...) or folders of frames, 300VW layout "
      "(NNN/vid.avi + NNN/annot/*.pts) supported.")

  def _info(self):
    features = common.face_features(self.builder_config)
    features["frame_index"] = tfds.features.Tensor(shape=(), dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=None,
        disable_shuffling=True,  # records keep frame order: clips are runs of records
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    self._report = common.BuildReport(self.name)
    self.info.metadata["segments"] = {}
    items = []
    for dirpath, names in common.walk(root, self._report):
      videos = [n for n in names if n.lower().endswith(common.VIDEO_EXTS)]
      frames = [n for n in names if n.lower().endswith(common.IMAGE_EXTS)]
      for n in names:
        if not n.lower().endswith(common.VIDEO_EXTS + common.IMAGE_EXTS + common.SIDECAR_EXTS):
          self._report.note("files of other types ignored")
      annot = os.path.join(dirpath, "annot") if len(videos) == 1 else None
      for v in videos:
        items.append(("video", os.path.relpath(os.path.join(dirpath, v), root), annot))
      if frames:
        items.append(("frames", os.path.relpath(dirpath, root), frames))
    if not items:
      raise errors.DataError(f"face_videos: no videos or frame folders under --manual_dir {root}")
    # Pass 1 (threads, one video each): per-frame alignment. Videos without a usable face are
    # skipped before the split is drawn, so that every split holds at least one video.
    planned = []
    for item, (plan, reason) in tqdm.tqdm(
        common.ordered_map(lambda it: (it, self._plan(root, it)), items, window=16),
        total=len(items), desc=f"{self.name}: locating faces", unit="video", mininterval=1.0):
      if plan is None:
        self._report.skip(item[1].replace(os.sep, "/"), reason)
      else:
        planned.append((item, plan))
    if not planned:
      self._report.write(os.fspath(self.data_dir))
      raise common.nothing_usable("face_videos", root, "video", self._report)
    by_split = common.split_items(planned, lambda p: common.group_of(p[0][1]),
                                  self.builder_config, self._report, "videos")
    return {split: self._generate_examples(root, its, split) for split, its in by_split.items()}

  # --- reading ----------------------------------------------------------------------------------

  def _frames(self, root, item):
    """Yields (frame_index, RGB frame or None, frame file name or None)."""
    kind, rel, extra = item
    limit = self.builder_config.max_frames or None
    if kind == "video":
      for i, frame in enumerate(common.video_frames(os.path.join(root, rel), limit or 0)):
        yield i, frame, None
      return
    names = extra
    stems = [os.path.splitext(n)[0] for n in names]
    numeric = all(s.isdigit() for s in stems)
    order = sorted(range(len(names)), key=(lambda k: int(stems[k])) if numeric else None)
    for pos, k in enumerate(order[:limit]):
      index = int(stems[k]) if numeric else pos
      yield index, common.read_image(os.path.join(root, rel, names[k])), names[k]

  def _annotations(self, root, item):
    """frame_index/name -> landmarks file, and name -> box, for what the item brings."""
    kind, rel, extra = item
    if kind == "video":
      annot = extra
      if annot and os.path.isdir(annot):
        return (lambda index, name: os.path.join(annot, f"{index + 1:06d}.pts")), {}
      return (lambda index, name: None), {}
    folder = os.path.join(root, rel)
    boxes = {}
    boxes_path = os.path.join(folder, "boxes.json")
    if os.path.exists(boxes_path):
      try:
        with open(boxes_path) as f:
          boxes = {k: tuple(float(v) for v in b) for k, b in json.load(f).items()}
      except (ValueError, TypeError, OSError):
        self._report.note("unreadable boxes.json (detector used)")

    def pts_of(index, name):
      stem = os.path.splitext(name)[0]
      for p in (os.path.join(folder, stem + ".pts"), os.path.join(folder, "annot", stem + ".pts")):
        if os.path.exists(p):
          return p
      return None
    return pts_of, boxes

  # --- generation -------------------------------------------------------------------------------

  def _plan(self, root, item):
    """Pass 1: per-frame alignment. Returns {frame_index: (points, box, alignment, segment)}
    or a reason to skip the video."""
    cfg = self.builder_config
    pts_of, given_boxes = self._annotations(root, item)
    plan, prev_index, prev_box, segment, n_frames = {}, None, None, -1, 0
    for index, frame, name in self._frames(root, item):
      n_frames += 1
      if frame is None:
        self._report.note("unreadable frames")
        prev_box = None
        continue
      points, box, jump = None, None, False
      pts = pts_of(index, name)
      if pts and os.path.exists(pts):
        try:
          points = faces_crop.read_pts(pts)
        except (ValueError, OSError):
          self._report.note("unreadable .pts files (frame skipped)")
          prev_box = None
          continue
      elif name in given_boxes:
        box = given_boxes[name]
      else:
        found, rejected = common.detect(frame, cfg)
        boxes = [b for b, _ in found]
        if rejected:
          self._report.note("face candidates rejected by the checks", len(rejected))
        if not boxes:
          self._report.note("frames without a detected face")
          prev_box = None
          continue
        box = boxes[0]
        if prev_box is not None:
          best = max(boxes, key=lambda b: faces_crop.iou(b, prev_box))
          if faces_crop.iou(best, prev_box) >= JUMP_IOU:
            box = best
          else:
            jump = True
      if points is not None:
        lo, hi = points.min(0), points.max(0)
        cur_box = (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
      else:
        cur_box = box
      if prev_index is None or index != prev_index + 1 or prev_box is None or jump:
        segment += 1
      plan[index] = [points, box, common.align(points, box, cfg.margin), segment]
      prev_index, prev_box = index, cur_box
    if n_frames == 0:
      return None, "unreadable video"
    if not plan:
      return None, "no face detected in any frame"
    self._smooth(plan)
    return plan, None

  def _smooth(self, plan):
    sigma = self.builder_config.temporal_smoothing
    if sigma <= 0:
      return
    by_segment = {}
    for index in sorted(plan):
      by_segment.setdefault(plan[index][3], []).append(index)
    for indices in by_segment.values():
      if len(indices) < 2:
        continue
      traj = np.array([plan[i][2] for i in indices], np.float64)  # [n, 3]: cx, cy, side
      traj = ndimage.gaussian_filter1d(traj, sigma, axis=0, mode="nearest")
      for i, a in zip(indices, traj):
        plan[i][2] = tuple(float(v) for v in a)

  def _generate_examples(self, root, planned, split):
    """Pass 2: crops in frame order; records the runs of consecutive frames (segments)."""
    segments, record = [], 0
    for item, plan in tqdm.tqdm(planned, desc=f"{self.name} {split}", unit="video",
                                mininterval=1.0):
      rel = item[1].replace(os.sep, "/")
      last_index, last_segment = None, None
      for index, frame, _ in self._frames(root, item):
        if index not in plan or frame is None:
          continue
        points, box, alignment, seg = plan[index]
        example = common.crop_example(frame, alignment, points, box, self.builder_config)
        example.update(source=rel, identity=common.group_of(rel), frame_index=index)
        if last_index is not None and index == last_index + 1 and seg == last_segment:
          segments[-1][1] += 1
        else:
          segments.append([record, 1])
        last_index, last_segment = index, seg
        record += 1
        yield f"{rel}#{index:07d}", example
    self.info.metadata["segments"] = dict(self.info.metadata["segments"], **{split: segments})
    self._report.examples[split] = record
    self._report.note(f"segments in {split}", len(segments))
    self._report.write(self.data_dir)
