"""Deblur the faces in photos, folders and videos with a trained checkpoint.

  python -m fdeblur.deblur --out=DIR INPUT... [--checkpoint=WORKDIR] [--faces_only]

Without --checkpoint the shipped face model (fdeblur/weights/face_model, see its MODEL_CARD.md)
is used.

Every face is detected, cropped (a square of `margin` x the detector box) at the scale where its
face has the size the model was trained on (`--scale`), deblurred in batches on the device and pasted back
with a feathered mask (by default only the model's change is added back, so a face larger than
the model's resolution keeps its detail; `--paste=replace` blends the crop itself); the rest of
the picture is left untouched. Inputs are image files, video
files (re-encoded as .mp4, no audio) or folders of them. Outputs go to --out, keeping the input
names (folders keep their layout); inputs are never overwritten, and neither is any file already
in --out unless --overwrite is given (the command stops before any work, naming them).

Images keep their alpha channel, their 16-bit depth (the model sees 8 bits; its change is added
to the 16-bit pixels) and a single channel when gray. Lossy inputs (JPEG, WebP) are written as
PNG under the same name (photo.jpg -> photo.png): re-encoding a JPEG would change every pixel,
while the PNG holds the decoded input exactly except in the face regions.

Faces: OpenCV's Haar cascade, and on a picture where it finds none (heavy blur and turned heads
defeat it) dlib's CNN when the [faces] extra is installed (`--detector=auto`). Video frames get
the cascade only (the CNN would cost ~2.6 s per frame; --detector=cnn runs it on every frame).
dlib's boxes are mapped to the cascade's, in which the training face size is measured
(faces.TO_HAAR). The detector's confidence must reach --min_confidence, and a weak detection (below
faces.SURE_CONFIDENCE) must also show an eye in the
box's upper part (the landmark check, --noface_check turns it off); rejected candidates are
listed. A picture in which no face is found is deblurred
whole at its own resolution, in overlapping tiles of a face crop's size blended smoothly
(`--no_face=skip` skips it instead; videos and --faces_only always need a face). Damaged or
truncated files (any decoder warning) and skipped inputs are listed at the end; the exit code is
0 when at least one input succeeded, 1 when none did, and that of fdeblur/errors.py for a bad
flag, checkpoint or --out (one line, before any work).
"""
import dataclasses
import itertools
import json
import math
import os
import sys

import cv2
import numpy as np
from absl import flags

from fdeblur import errors
from input_pipeline.datasets.common import IMAGE_EXTS, VIDEO_EXTS, video_frames


UsageError = errors.UsageError
SUMMARY = "deblur_summary.json"
LOSSLESS_EXT = {".jpg": ".png", ".jpeg": ".png", ".webp": ".png"}  # lossy input -> PNG output


@dataclasses.dataclass
class Job:
  path: str  # input file
  out: str  # output file (image or video), or folder of crops with --faces-only
  kind: str  # image | video


def _ext(path):
  return os.path.splitext(path)[1].lower()


def plan(inputs, out_dir: str, faces_only: bool = False,
         overwrite: bool = False) -> tuple[list[Job], list[tuple[str, str]]]:
  """Input files and their outputs; (jobs, skipped [(path, reason)]). Raises UsageError when an
  output would be an input (or the output folder is an input), WouldOverwrite when an output
  (or deblur_summary.json) already exists and `overwrite` is False. Lossy inputs (JPEG, WebP)
  get a lossless PNG output of the same name (LOSSLESS_EXT): pixels away from the faces stay
  exactly the decoded input's."""
  jobs, skipped = [], []
  out_dir = os.path.abspath(out_dir)
  real_inputs = {os.path.realpath(p) for p in inputs}
  if os.path.realpath(out_dir) in real_inputs:
    raise UsageError(f"--out {out_dir} is one of the inputs: choose another output folder")

  def add(path, rel):
    ext = _ext(path)
    kind = "video" if ext in VIDEO_EXTS else "image"
    stem = os.path.splitext(rel)[0]
    if faces_only:
      out = os.path.join(out_dir, stem + "_faces")
    elif kind == "video":
      out = os.path.join(out_dir, stem + ".mp4")
    else:
      out = os.path.join(out_dir, stem + LOSSLESS_EXT.get(ext, ext))
    jobs.append(Job(path, out, kind))

  for p in inputs:
    if os.path.isdir(p):
      base = os.path.basename(os.path.normpath(p))
      found = False
      for root, dirs, files in os.walk(p):
        dirs.sort()
        if os.path.realpath(root).startswith(os.path.realpath(out_dir) + os.sep) or \
            os.path.realpath(root) == os.path.realpath(out_dir):
          continue  # never read our own outputs back
        for name in sorted(files):
          full = os.path.join(root, name)
          if _ext(name) in IMAGE_EXTS + VIDEO_EXTS:
            add(full, os.path.join(base, os.path.relpath(full, p)))
            found = True
      if not found:
        skipped.append((p, "folder without images or videos"))
    elif os.path.isfile(p):
      add(p, os.path.basename(p))
    else:
      skipped.append((p, "no such file or folder"))
  real_all = real_inputs | {os.path.realpath(j.path) for j in jobs}
  for j in jobs:
    if os.path.realpath(j.out) in real_all:
      raise UsageError(f"output {j.out} would overwrite the input {j.path}: choose another --out")
  seen = {}
  for j in jobs:
    if j.out in seen:
      raise UsageError(f"inputs {seen[j.out]} and {j.path} would both write {j.out}")
    seen[j.out] = j.path
  if not overwrite:
    existing = [p for p in [j.out for j in jobs] + [os.path.join(out_dir, SUMMARY)]
                if os.path.lexists(p)]
    if existing:
      raise errors.WouldOverwrite(
          f"--out {out_dir} already holds {len(existing)} of this run's output files "
          f"({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}): pass --overwrite "
          "to replace them, or choose another --out")
  return jobs, skipped


SCALES = ("train", "native", "squeeze")
NO_FACE = ("whole", "skip")  # what an image without a detected face gets
DETECTORS = ("auto", "haar", "hog", "cnn")
# --ensemble: the dihedral transforms (k: rot90 k % 4 times, then a left-right flip when k >= 4)
# each crop is deblurred under; the outputs, transformed back, are averaged.
ENSEMBLES = {1: (0,), 2: (0, 4), 8: tuple(range(8))}


def dihedral(x, k: int, inverse: bool = False):
  """[N, H, W, C] under the k-th dihedral transform (or its inverse)."""
  if not inverse:
    x = np.rot90(x, k % 4, axes=(1, 2))
  if k >= 4:
    x = x[:, :, ::-1]
  return np.rot90(x, -(k % 4), axes=(1, 2)) if inverse else x


# Input sides each generator accepts (its total stride); crops outside "squeeze" are rounded to it.
SIZE_MULTIPLE = {"deblurgan": 4, "identity_gan": 256}
DEFAULT_MULTIPLE = 32


def training_face_size(config, margin: float) -> float:
  """Side (px) of the detector's face box in the model's training data: config.dataset.face_size
  where the config sets it (models trained on patches of photos at their own resolution), else
  image_size / margin (models trained on face crops of margin x the face box)."""
  size = float(config.dataset.face_size)
  return size if size > 0 else float(config.dataset.image_size) / margin


def model_max_enlarge(config) -> float:
  """config.eval.max_enlarge, the most the model's config lets the command enlarge a small
  face (0: no limit)."""
  limit = float(config.eval.get("max_enlarge", 0.0))
  if limit and limit < 1:
    raise UsageError(f"the model's config.eval.max_enlarge={limit}: must be >= 1 (or 0: no "
                     f"limit); pass --max_enlarge")
  return limit or math.inf


class Deblurrer:
  """A checkpoint's generator and the crop geometry of its dataset.

  `scale`: at what scale each face is deblurred. "train": the crop (margin x the face box) is
  resized so the face has its size in the training data (`face_size`, default
  training_face_size), where the blur in pixels is what the model learnt (the generators are
  fully convolutional: the crop is margin x face_size pixels, not necessarily the training
  image size), but a small face is enlarged at most `max_enlarge` times (default: the model's
  config.eval.max_enlarge; an enlarged face looks softer than what the model learnt as sharp,
  and it sharpens it); "native": the crop at the photo's own resolution; "squeeze": the crop
  resized to config.dataset.image_size. The model's change is warped back to the photo either
  way."""

  def __init__(self, checkpoint: str, config_path: str = "", detector: str = "auto",
               margin: float = 0.0, feather: float = 0.15, batch_size: int = 0,
               paste: str = "residual", min_confidence: float | None = None,
               face_check: bool = True, scale: str = "train", face_size: float = 0.0,
               ensemble: int = 1, max_enlarge: float = 0.0):
    # pylint: disable=import-outside-toplevel  (--help and usage errors do not import JAX)
    from fdeblur import inference, state, weights
    checkpoint = checkpoint or weights.DEFAULT
    if weights.is_exported(checkpoint):  # exported weights: config.json + params.msgpack
      self.config, nets, train_state = weights.load(checkpoint)
    elif checkpoint == weights.DEFAULT:
      raise errors.NoCheckpoint(f"no --checkpoint given and the shipped model is missing "
                                f"({weights.DEFAULT}): reinstall fdeblur or pass --checkpoint")
    else:
      check_checkpoint(checkpoint)
      workdir = checkpoint
      if os.path.basename(os.path.normpath(checkpoint)) == "checkpoints":
        workdir = os.path.dirname(os.path.normpath(checkpoint))
      self.config = load_config(workdir, config_path)
      nets, train_state = state.restore_for_evaluation(self.config, workdir)
    self.predict = inference.Predictor(nets, train_state,
                                       batch_size or self.config.eval.batch_size)
    self.size = int(self.config.dataset.image_size)
    self.multiple = SIZE_MULTIPLE.get(self.config.model.name, DEFAULT_MULTIPLE)
    self.margin = margin or float(self.config.dataset.margin)
    self.detector, self.feather, self.paste_mode = detector, feather, paste
    self.min_confidence, self.face_check = min_confidence, face_check
    self.rejected = []  # (box, reason) of the face candidates the checks rejected
    if scale not in SCALES:
      raise UsageError(f"--scale {scale!r}: one of {', '.join(SCALES)}")
    self.scale = scale
    if ensemble not in ENSEMBLES:
      raise UsageError(f"--ensemble={ensemble}: one of {', '.join(map(str, ENSEMBLES))}")
    self.transforms = ENSEMBLES[ensemble]
    self.face_size = face_size or training_face_size(self.config, self.margin)
    if max_enlarge and max_enlarge < 1:
      raise UsageError(f"--max_enlarge={max_enlarge}: must be >= 1 (or 0: the model's)")
    self.max_enlarge = max_enlarge or model_max_enlarge(self.config)
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    if detector not in DETECTORS:
      raise UsageError(f"--detector={detector}: one of {', '.join(DETECTORS)}")
    if detector in ("hog", "cnn"):
      faces.load()  # fail now with the install hint
    # auto: Haar, then dlib's CNN where Haar finds no face (with the [faces] extra installed).
    self.fallback = detector == "auto" and faces.available()
    self.found_by = None  # the detector that found the last picture's faces

  def crops(self, image, previous=None, smoothing: float = 0.0, fallback: bool = True):
    """[(box, confidence, crop uint8, matrix)] for every face in an RGB image. `previous`: the
    boxes of the previous video frame; a face overlapping one (IoU > 0.3) gets its box blended
    with it (`smoothing` = weight of the previous box), so crops do not jitter between frames.
    fallback=False: no CNN fallback of --detector=auto (video frames: ~2.6 s per frame)."""
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    out = []
    found, rejected, self.found_by = faces.find_faces(
        image, "haar" if self.detector == "auto" else self.detector, self.min_confidence,
        self.face_check, self.fallback and fallback)
    self.rejected.extend(rejected)
    for box, conf in found:
      if previous and smoothing > 0:
        best = max(previous, key=lambda b: faces_crop_iou(b, box))
        if faces_crop_iou(best, box) > 0.3:
          box = tuple(smoothing * np.asarray(best) + (1 - smoothing) * np.asarray(box))
      crop, mat = faces.crop_face(image, box, self.margin, self.crop_size(box))
      out.append((box, conf, crop, mat))
    return out

  def crop_size(self, box) -> int:
    """Side (px) of the model's input for a face box (x, y, w, h); see the class docstring."""
    if self.scale == "squeeze":
      return self.size
    face = max(box[2], box[3])
    if self.scale == "train":
      face = min(self.face_size, face * self.max_enlarge)
    m = self.multiple
    return max(m, int(round(self.margin * face / m)) * m)

  def run(self, crops_u8: list) -> list:
    """Deblurs uint8 crops (any number; crops of one size share device batches); float [0, 1]
    outputs in the input order."""
    outs = [None] * len(crops_u8)
    for shape in sorted({c.shape for c in crops_u8}):
      idx = [i for i, c in enumerate(crops_u8) if c.shape == shape]
      x = np.stack([crops_u8[i] for i in idx]).astype(np.float32) / 255.0
      y = np.mean([dihedral(self.predict(np.ascontiguousarray(dihedral(x, k))), k, inverse=True)
                   for k in self.transforms], axis=0)
      for i, out in zip(idx, np.clip(y, 0.0, 1.0)):
        outs[i] = out
    return outs

  def paste(self, image, faces_found, outputs):
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    for (_, _, crop, mat), out in zip(faces_found, outputs):
      source = crop if self.paste_mode == "residual" else None
      image = faces.paste_back(image, out, mat, self.feather, source_crop=source)
    return image

  def deblur_whole(self, image, rgb8):
    """`image` (uint8 or uint16 RGB) with the model's change over the whole picture, computed
    on `rgb8` at its own resolution in overlapping tiles of a face crop's size (the context the
    model sees for a face; instance norm makes one huge tile unlike training) and added back
    with weights that fall off towards each tile's border. Returns (new image, tile count)."""
    tile = self.crop_size((0.0, 0.0, self.face_size, self.face_size))
    h, w = rgb8.shape[:2]
    th, tw = (min(tile, -(-n // self.multiple) * self.multiple) for n in (h, w))
    padded = np.pad(rgb8, ((0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)),
                    mode="symmetric")
    origins = [(y, x) for y in tile_origins(padded.shape[0], th)
               for x in tile_origins(padded.shape[1], tw)]
    crops = [padded[y:y + th, x:x + tw] for y, x in origins]
    deltas = [out - crop.astype(np.float32) / 255.0 for out, crop in zip(self.run(crops), crops)]
    delta = blend_tiles(padded.shape[:2], origins, deltas)[:h, :w]
    top = float(np.iinfo(image.dtype).max)
    out = np.clip(image.astype(np.float32) + top * delta + 0.5, 0, top).astype(image.dtype)
    return out, len(origins)


def tile_origins(length: int, tile: int) -> list[int]:
  """Start offsets of tiles of `tile` px covering `length` px (>= tile), overlapping by at least
  a quarter of a tile; the last tile ends at the border."""
  if length <= tile:
    return [0]
  n = 1 + -(-(length - tile) // (tile - tile // 4))  # tiles needed with a step of 3/4 tile
  return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def blend_tiles(shape, origins, deltas) -> np.ndarray:
  """[H, W, C] weighted mean of the tiles' [th, tw, C] `deltas` placed at `origins` (y, x):
  each tile weighs 1 in its centre, falling linearly towards its border (never to 0, so every
  pixel of a covered picture has weight), so seams between tiles do not show."""
  th, tw, c = deltas[0].shape
  ramp = [np.minimum(np.arange(n) + 1.0, np.arange(n, 0, -1.0)) / max(1.0, n / 4)
          for n in (th, tw)]
  weight = np.minimum(np.clip(ramp[0], 0, 1)[:, None], np.clip(ramp[1], 0, 1)[None, :])[..., None]
  total, wsum = np.zeros((*shape, c), np.float32), np.zeros((*shape, 1), np.float32)
  for (y, x), d in zip(origins, deltas):
    total[y:y + th, x:x + tw] += weight * d
    wsum[y:y + th, x:x + tw] += weight
  return total / np.maximum(wsum, 1e-12)


def check_checkpoint(checkpoint: str) -> None:
  """--checkpoint must be an existing folder (it is never created)."""
  if not errors.is_remote(checkpoint) and not os.path.isdir(checkpoint):
    raise errors.NoCheckpoint(f"--checkpoint {checkpoint}: no such folder (a training workdir "
                              "holding checkpoints/)")


def load_config(workdir: str, config_path: str = ""):
  """--config (configs/NAME.py[:variant]) if given, else the workdir's config.json."""
  from fdeblur import config_lib  # pylint: disable=import-outside-toplevel
  if config_path:
    try:
      return config_lib.load(config_path)
    except FileNotFoundError as e:
      raise UsageError(f"--config {config_path}: {e}") from e
  try:
    return config_lib.from_workdir(workdir)
  except FileNotFoundError as e:
    raise UsageError(f"{e}: pass --config configs/NAME.py[:variant] (the config it was trained "
                     "with)") from e


def faces_crop_iou(a, b) -> float:
  from input_pipeline import faces_crop  # pylint: disable=import-outside-toplevel
  return faces_crop.iou(a, b)


# PIL's Image.transpose operation for each EXIF orientation, as numpy on [H, W, ...] arrays
_EXIF_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}


@dataclasses.dataclass
class Picture:
  """A decoded input image: `rgb` [H, W, 3] uint8 or uint16 (the file's depth), `alpha` [H, W]
  or None, `gray` (the file had one channel: written back as one)."""
  rgb: np.ndarray
  alpha: np.ndarray | None = None
  gray: bool = False

  def rgb8(self) -> np.ndarray:
    """8-bit RGB for the detector and the model."""
    if self.rgb.dtype == np.uint8:
      return self.rgb
    return (self.rgb.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)


def read_picture(path: str) -> Picture:
  """Decodes an image keeping its alpha channel and 16-bit depth (EXIF orientation applied, as
  viewers show it). Raises ValueError with the reason for files that cannot be decoded
  completely: Pillow checks the whole file first (a truncated JPEG or PNG, which OpenCV would
  decode with grey rows and only a warning, is refused)."""
  import warnings  # pylint: disable=import-outside-toplevel
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  orientation = 1
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # a decoder warning is a damaged file
      with Image.open(path) as im:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        im.load()
  except UnidentifiedImageError:
    pass  # a format Pillow does not know: OpenCV alone decides
  except (OSError, SyntaxError, ValueError, Warning) as e:
    reason = " ".join(str(e).split()) or type(e).__name__
    raise ValueError(f"damaged or truncated image ({reason})") from None
  try:
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
  except (OSError, cv2.error):
    image = None
  if image is None or image.size == 0:
    raise ValueError("not a readable image")
  if image.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"{image.dtype} pixels are not supported (8- or 16-bit images only): "
                     "convert it first")
  image = _EXIF_ORIENT.get(orientation, lambda a: a)(image)
  if image.ndim == 2 or image.shape[2] == 1:
    return Picture(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB), gray=True)
  if image.shape[2] == 4:
    image = np.ascontiguousarray(image)
    return Picture(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), alpha=image[..., 3].copy())
  return Picture(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB))


def write_picture(path: str, picture: Picture, overwrite: bool) -> None:
  """Encodes like the input (depth, alpha, one channel for gray) into `path`'s format; an
  existing file is replaced only with `overwrite` (opened exclusively otherwise)."""
  rgb = picture.rgb
  if picture.gray:
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  elif picture.alpha is not None:
    image = np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), picture.alpha[..., None]], -1)
  else:
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
  ok, buf = cv2.imencode(_ext(path), image)
  if not ok:
    raise OSError(f"could not encode {path}")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "wb" if overwrite else "xb") as f:
    f.write(buf.tobytes())


def _write_image(path, rgb):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
    raise OSError(f"could not write {path}")


def _write_crops(folder, prefix, outputs):
  for k, out in enumerate(outputs):
    _write_image(os.path.join(folder, f"{prefix}face{k}.png"),
                 np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))


def process_image(d: Deblurrer, job: Job, faces_only: bool, overwrite: bool = False,
                  no_face: str = "whole") -> dict:
  picture = read_picture(job.path)
  rejected_before = len(d.rejected)
  found = d.crops(picture.rgb8())
  rejected = [{"box": [float(v) for v in b], "reason": r} for b, r in d.rejected[rejected_before:]]
  if not found:
    why = f" ({len(rejected)} candidate(s) rejected: {rejected[0]['reason']})" if rejected else ""
    if faces_only or no_face == "skip":
      raise ValueError("no face found" + why)
    picture.rgb, tiles = d.deblur_whole(picture.rgb, picture.rgb8())
    write_picture(job.out, picture, overwrite)
    return {"faces": [], "whole_picture": f"no face found{why}: deblurred whole in {tiles} "
                                           "tile(s)", "rejected": rejected}
  outputs = d.run([c for _, _, c, _ in found])
  if faces_only:
    _write_crops(job.out, "", outputs)
  else:
    # The model sees 8 bits; its change is added to the file's own pixels (16 bits stay 16).
    picture.rgb = d.paste(picture.rgb, found, outputs)
    write_picture(job.out, picture, overwrite)
  return {"faces": [{"box": [float(v) for v in b], "confidence": float(c),
                     "matrix": np.asarray(m).tolist()} for b, c, _, m in found],
          "detector": d.found_by, "rejected": rejected}


def process_video(d: Deblurrer, job: Job, faces_only: bool, chunk: int = 16, progress=None,
                  smoothing: float = 0.5) -> dict:
  """Frames in chunks of `chunk` (one device batch of all their faces); face boxes smoothed
  along time (see Deblurrer.crops); re-encoded as .mp4 (mp4v), no audio."""
  cap = cv2.VideoCapture(job.path)
  if not cap.isOpened():
    raise ValueError("not a readable video")
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
  cap.release()
  source = video_frames(job.path)
  previous = None
  writer, frames_done, faces_total = None, 0, 0
  tmp_out = job.out + ".part.mp4"
  bar = progress(total=total or None, desc=os.path.basename(job.path), leave=False,
                 unit="frame") if progress else None
  try:
    while True:
      frames = list(itertools.islice(source, chunk))
      if not frames:
        break
      found = []
      for f in frames:
        found.append(d.crops(f, previous, smoothing, fallback=False))
        previous = [b for b, _, _, _ in found[-1]]
      outputs = d.run([c for fs in found for _, _, c, _ in fs])
      k = 0
      for t, (frame, fs) in enumerate(zip(frames, found)):
        outs, k = outputs[k:k + len(fs)], k + len(fs)
        faces_total += len(fs)
        if faces_only:
          _write_crops(job.out, f"frame{frames_done + t:06d}_", outs)
          continue
        if writer is None:
          os.makedirs(os.path.dirname(job.out) or ".", exist_ok=True)
          h, w = frame.shape[:2]
          writer = cv2.VideoWriter(tmp_out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
          if not writer.isOpened():
            raise OSError(f"could not open a video writer for {job.out}")
        writer.write(cv2.cvtColor(d.paste(frame, fs, outs), cv2.COLOR_RGB2BGR))
      frames_done += len(frames)
      if bar is not None:
        bar.update(len(frames))
  finally:
    source.close()
    if writer is not None:
      writer.release()
    if bar is not None:
      bar.close()
  if frames_done == 0:
    raise ValueError("not a readable video (no frame decoded)")
  if faces_total == 0:
    if os.path.exists(tmp_out):
      os.remove(tmp_out)
    raise ValueError(f"no face found in {frames_done} frames")
  if not faces_only:
    os.replace(tmp_out, job.out)
  return {"frames": frames_done, "faces": faces_total}


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags, on its own FlagValues (importing this module defines none globally)."""
  fv = flag_values
  flags.DEFINE_string("checkpoint", "", "Training workdir (with checkpoints/) or a folder of "
                      "exported weights (config.json + params.msgpack); default: the shipped "
                      "face model (fdeblur/weights/face_model).", flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder.", flag_values=fv)
  flags.DEFINE_string("config", "", "configs/NAME.py[:variant] when the workdir has no "
                      "config.json.", flag_values=fv)
  flags.DEFINE_bool("faces_only", False, "Write the deblurred crops only.", flag_values=fv)
  flags.DEFINE_enum("detector", "auto", list(DETECTORS), "haar: OpenCV (as the training data "
                    "was cropped); hog/cnn: dlib (the [faces] extra), boxes mapped to Haar's; "
                    "auto: haar, then dlib's CNN on a picture where haar finds no face (with the "
                    "[faces] extra; ~2.6 s per such picture on 2 CPU cores; not on video frames).",
                    flag_values=fv)
  flags.DEFINE_float("margin", 0.0, "Crop side / detector box side (0: the dataset's margin).",
                     flag_values=fv)
  flags.DEFINE_float("feather", 0.15, "Width of the blending ramp, fraction of the crop side.",
                     flag_values=fv)
  flags.DEFINE_enum("paste", "residual", ["residual", "replace"], "residual: add the model's "
                    "change to the original pixels (keeps the detail of faces larger than the "
                    "model's resolution); replace: blend the deblurred crop itself.",
                    flag_values=fv)
  flags.DEFINE_enum("scale", "train", list(SCALES), "train: each face resized to the model's "
                    "training face size (its blur then has the size the model learnt); native: "
                    "the photo's own resolution; squeeze: the crop resized to the training image "
                    "size.", flag_values=fv)
  flags.DEFINE_float("face_size", 0.0, "With --scale=train: the face size (px, detector box) to "
                     "deblur at (0: the model's, config.dataset.face_size or image_size / margin).",
                     flag_values=fv)
  flags.DEFINE_float("max_enlarge", 0.0, "With --scale=train: enlarge a small face at most this "
                     "many times (0: the model's config.eval.max_enlarge; no limit where it is 0).",
                     flag_values=fv)
  flags.DEFINE_enum("ensemble", "1", [str(n) for n in ENSEMBLES], "Self-ensemble: deblur each "
                    "crop under 1, 2 (left-right flip) or 8 (rotations and flips) transforms and "
                    "average the outputs transformed back (N times the compute).",
                    flag_values=fv)
  flags.DEFINE_enum("no_face", "whole", list(NO_FACE), "An image in which no face is found: "
                    "whole: deblur the whole picture at its own resolution; skip: leave it out "
                    "(listed as skipped).", flag_values=fv)
  flags.DEFINE_float("smooth", 0.5, "Video: weight of the previous frame's face box (0 = none).",
                     flag_values=fv)
  flags.DEFINE_integer("batch_size", 0, "Faces per device batch (0: config.eval.batch_size).",
                       flag_values=fv)
  flags.DEFINE_float("min_confidence", None, "Detector confidence threshold (haar and auto: "
                     "cascade votes, default 0 = the cascades' own; hog: SVM score, default 0.2; "
                     "cnn: MMOD confidence, default 0.5; auto's CNN fallback keeps 0.5).",
                     flag_values=fv)
  flags.DEFINE_bool("face_check", True, "Landmark check: a detection needs an eye in its upper "
                    "part (--noface_check accepts every detection).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace output files that already exist in --out.",
                    flag_values=fv)
  flags.DEFINE_bool("quiet", False, "No progress bar.", flag_values=fv)


def _usage(fv) -> str:
  return f"{__doc__}\nflags:\n{fv.main_module_help() or fv.get_help()}"


def main(argv=None) -> int:
  """argv: the arguments after the program name (default sys.argv[1:]); returns the exit code."""
  argv = sys.argv[1:] if argv is None else list(argv)
  fv = flags.FlagValues()
  define_flags(fv)
  if any(a in ("-h", "--help", "--helpshort", "-help") for a in argv):
    print(_usage(fv))
    return 0
  try:
    inputs = fv(["fdeblur.deblur", *argv])[1:]
    missing = [f"--{n}" for n in ("out",) if not fv[n].value]
    if missing or not inputs:
      raise flags.Error(f"{' and '.join(missing) or 'INPUT...'} required "
                        "(python -m fdeblur.deblur --out=DIR INPUT... [--checkpoint=WORKDIR])")
  except flags.Error as e:
    print(f"fdeblur.deblur: error: {e}", file=sys.stderr)
    return 2
  args = fv
  created = False
  try:
    jobs, skipped = plan(inputs, args.out, args.faces_only, args.overwrite)
    if not jobs:
      for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
      print("fdeblur.deblur: nothing to do", file=sys.stderr)
      return 1
    if args.checkpoint:  # none: the shipped model (Deblurrer says so if it is missing)
      check_checkpoint(args.checkpoint)
    created = errors.ensure_writable_dir(args.out, "--out")
    d = Deblurrer(args.checkpoint, args.config, args.detector, args.margin, args.feather,
                  args.batch_size, args.paste, args.min_confidence, args.face_check,
                  args.scale, args.face_size, int(args.ensemble), args.max_enlarge)
  except (errors.UserError, ImportError) as e:
    if created:
      _remove_empty(args.out)
    code = e.exit_code if isinstance(e, errors.UserError) else 2
    print(f"fdeblur.deblur: error: {' '.join(str(e).split())}", file=sys.stderr)
    return code
  return run_jobs(d, jobs, skipped, args)


def _remove_empty(folder: str) -> None:
  try:
    os.rmdir(folder)  # only when nothing was put there
  except OSError:
    pass


def run_jobs(d: Deblurrer, jobs, skipped, args) -> int:
  """Deblurs every job, then writes deblur_summary.json and prints what was done, skipped and
  rejected. 0 when at least one input succeeded, else 1."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  done, summary = [], {"outputs": {}, "skipped": {}}
  for job in tqdm(jobs, desc="deblurring", unit="file", disable=args.quiet, file=sys.stderr):
    try:
      if job.kind == "video":
        info = process_video(d, job, args.faces_only, progress=None if args.quiet else tqdm,
                             smoothing=args.smooth)
      else:
        info = process_image(d, job, args.faces_only, args.overwrite, args.no_face)
    except FileExistsError:
      skipped.append((job.path, f"{job.out} appeared meanwhile (pass --overwrite)"))
      continue
    except (ValueError, OSError, cv2.error) as e:
      skipped.append((job.path, str(e)))
      continue
    except Exception as e:  # pylint: disable=broad-except
      # Anything else (a library's RuntimeError on an odd picture) skips this input, named,
      # instead of losing the rest of the batch.
      skipped.append((job.path, f"{type(e).__name__}: {' '.join(str(e).split())}"))
      continue
    done.append(job)
    summary["outputs"][job.out] = dict(info, input=job.path)
  summary["skipped"] = {p: r for p, r in skipped}
  with open(os.path.join(args.out, SUMMARY), "w" if args.overwrite else "x") as f:
    json.dump(summary, f, indent=1)
  faces_n = sum(len(v["faces"]) if isinstance(v["faces"], list) else v["faces"]
                for v in summary["outputs"].values())
  whole = [(v["input"], v["whole_picture"]) for v in summary["outputs"].values()
           if "whole_picture" in v]
  print(f"deblurred {len(done)} of {len(done) + len(skipped)} inputs ({faces_n} faces"
        f"{f', {len(whole)} whole pictures' if whole else ''}) into {os.path.abspath(args.out)}")
  for path, what in whole:
    print(f"whole picture {path}: {what}")
  for path, reason in skipped:
    print(f"skipped {path}: {reason}")
  for out, info in summary["outputs"].items():
    for r in info.get("rejected", []):
      print(f"rejected a face candidate in {info['input']} at {[round(v) for v in r['box']]}: "
            f"{r['reason']}")
  return 0 if done else 1


if __name__ == "__main__":
  sys.exit(main())
