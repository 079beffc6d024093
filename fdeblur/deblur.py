"""Deblur the faces in photos, folders and videos with a trained checkpoint.

  python -m fdeblur.deblur --checkpoint=WORKDIR --out=DIR INPUT... [--faces_only]

Every face is detected, cropped as the training data was (a square of `margin` x the detector
box, resized to config.dataset.image_size), deblurred in batches on the device and pasted back
with a feathered mask (by default only the model's change is added back, so a face larger than
the model's resolution keeps its detail; `--paste=replace` blends the crop itself); the rest of
the picture is left untouched. Inputs are image files, video
files (re-encoded as .mp4, no audio) or folders of them. Outputs go to --out, keeping the input
names (folders keep their layout); inputs are never overwritten. Bad or face-less inputs are
skipped and listed at the end; the exit code is 0 when at least one input succeeded.
"""
import dataclasses
import itertools
import json
import os
import sys

import cv2
import numpy as np
from absl import flags

from input_pipeline.datasets.common import IMAGE_EXTS, VIDEO_EXTS, video_frames


class UsageError(Exception):
  pass


@dataclasses.dataclass
class Job:
  path: str  # input file
  out: str  # output file (image or video), or folder of crops with --faces-only
  kind: str  # image | video


def _ext(path):
  return os.path.splitext(path)[1].lower()


def plan(inputs, out_dir: str, faces_only: bool = False) -> tuple[list[Job], list[tuple[str, str]]]:
  """Input files and their outputs; (jobs, skipped [(path, reason)]). Raises UsageError when an
  output would be an input (or the output folder is an input)."""
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
      out = os.path.join(out_dir, rel)
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
  return jobs, skipped


class Deblurrer:
  """A checkpoint's generator and the crop geometry of its dataset."""

  def __init__(self, checkpoint: str, config_path: str = "", detector: str = "haar",
               margin: float = 0.0, feather: float = 0.15, batch_size: int = 0,
               paste: str = "residual"):
    # pylint: disable=import-outside-toplevel  (--help and usage errors do not import JAX)
    from fdeblur import inference, state
    workdir = checkpoint
    if os.path.basename(os.path.normpath(checkpoint)) == "checkpoints":
      workdir = os.path.dirname(os.path.normpath(checkpoint))
    self.config = load_config(workdir, config_path)
    nets, train_state = state.restore_for_evaluation(self.config, workdir)
    self.predict = inference.Predictor(nets, train_state,
                                       batch_size or self.config.eval.batch_size)
    self.size = int(self.config.dataset.image_size)
    self.margin = margin or float(self.config.dataset.margin)
    self.detector, self.feather, self.paste_mode = detector, feather, paste
    if detector != "haar":
      from fdeblur import faces  # pylint: disable=import-outside-toplevel
      faces.load()  # fail now with the install hint

  def crops(self, image, previous=None, smoothing: float = 0.0):
    """[(box, confidence, crop uint8, matrix)] for every face in an RGB image. `previous`: the
    boxes of the previous video frame; a face overlapping one (IoU > 0.3) gets its box blended
    with it (`smoothing` = weight of the previous box), so crops do not jitter between frames."""
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    out = []
    for box, conf in faces.detect(image, self.detector):
      if previous and smoothing > 0:
        best = max(previous, key=lambda b: faces_crop_iou(b, box))
        if faces_crop_iou(best, box) > 0.3:
          box = tuple(smoothing * np.asarray(best) + (1 - smoothing) * np.asarray(box))
      crop, mat = faces.crop_face(image, box, self.margin, self.size)
      out.append((box, conf, crop, mat))
    return out

  def run(self, crops_u8: list) -> list:
    """Deblurs uint8 crops (any number) in device batches; float [0, 1] outputs."""
    if not crops_u8:
      return []
    x = np.stack(crops_u8).astype(np.float32) / 255.0
    return list(np.clip(self.predict(x), 0.0, 1.0))

  def paste(self, image, faces_found, outputs):
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    for (_, _, crop, mat), out in zip(faces_found, outputs):
      source = crop if self.paste_mode == "residual" else None
      image = faces.paste_back(image, out, mat, self.feather, source_crop=source)
    return image


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


def _read_image(path):
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    return None
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _write_image(path, rgb):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
    raise OSError(f"could not write {path}")


def _write_crops(folder, prefix, outputs):
  for k, out in enumerate(outputs):
    _write_image(os.path.join(folder, f"{prefix}face{k}.png"),
                 np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))


def process_image(d: Deblurrer, job: Job, faces_only: bool) -> dict:
  image = _read_image(job.path)
  if image is None:
    raise ValueError("not a readable image")
  found = d.crops(image)
  if not found:
    raise ValueError("no face found")
  outputs = d.run([c for _, _, c, _ in found])
  if faces_only:
    _write_crops(job.out, "", outputs)
  else:
    _write_image(job.out, d.paste(image, found, outputs))
  return {"faces": [{"box": [float(v) for v in b], "confidence": float(c),
                     "matrix": np.asarray(m).tolist()} for b, c, _, m in found]}


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
        found.append(d.crops(f, previous, smoothing))
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
  flags.DEFINE_string("checkpoint", None, "Training workdir (with checkpoints/).", flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder.", flag_values=fv)
  flags.DEFINE_string("config", "", "configs/NAME.py[:variant] when the workdir has no "
                      "config.json.", flag_values=fv)
  flags.DEFINE_bool("faces_only", False, "Write the deblurred crops only.", flag_values=fv)
  flags.DEFINE_enum("detector", "haar", ["haar", "hog", "cnn"], "haar: OpenCV (as the embedded "
                    "dataset was cropped); hog/cnn: dlib (the [faces] extra).", flag_values=fv)
  flags.DEFINE_float("margin", 0.0, "Crop side / detector box side (0: the dataset's margin).",
                     flag_values=fv)
  flags.DEFINE_float("feather", 0.15, "Width of the blending ramp, fraction of the crop side.",
                     flag_values=fv)
  flags.DEFINE_enum("paste", "residual", ["residual", "replace"], "residual: add the model's "
                    "change to the original pixels (keeps the detail of faces larger than the "
                    "model's resolution); replace: blend the deblurred crop itself.",
                    flag_values=fv)
  flags.DEFINE_float("smooth", 0.5, "Video: weight of the previous frame's face box (0 = none).",
                     flag_values=fv)
  flags.DEFINE_integer("batch_size", 0, "Faces per device batch (0: config.eval.batch_size).",
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
    missing = [f"--{n}" for n in ("checkpoint", "out") if not fv[n].value]
    if missing or not inputs:
      raise flags.Error(f"{' and '.join(missing) or 'INPUT...'} required "
                        "(python -m fdeblur.deblur --checkpoint=WORKDIR --out=DIR INPUT...)")
  except flags.Error as e:
    print(f"fdeblur.deblur: error: {e}", file=sys.stderr)
    return 2
  args = fv
  try:
    jobs, skipped = plan(inputs, args.out, args.faces_only)
  except UsageError as e:
    print(f"fdeblur.deblur: error: {e}", file=sys.stderr)
    return 2
  if not jobs:
    for path, reason in skipped:
      print(f"skipped {path}: {reason}", file=sys.stderr)
    print("fdeblur.deblur: nothing to do", file=sys.stderr)
    return 1
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  try:
    d = Deblurrer(args.checkpoint, args.config, args.detector, args.margin, args.feather,
                  args.batch_size, args.paste)
  except (UsageError, FileNotFoundError, ImportError) as e:
    print(f"fdeblur.deblur: error: {e}", file=sys.stderr)
    return 2
  done, summary = [], {"outputs": {}, "skipped": {}}
  for job in tqdm(jobs, desc="deblurring", unit="file", disable=args.quiet, file=sys.stderr):
    try:
      if job.kind == "video":
        info = process_video(d, job, args.faces_only, progress=None if args.quiet else tqdm,
                             smoothing=args.smooth)
      else:
        info = process_image(d, job, args.faces_only)
    except (ValueError, OSError, cv2.error) as e:
      skipped.append((job.path, str(e)))
      continue
    done.append(job)
    summary["outputs"][job.out] = dict(info, input=job.path)
  summary["skipped"] = {p: r for p, r in skipped}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "deblur_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  faces_n = sum(len(v["faces"]) if isinstance(v["faces"], list) else v["faces"]
                for v in summary["outputs"].values())
  print(f"deblurred {len(done)} of {len(done) + len(skipped)} inputs ({faces_n} faces) into {os.path.abspath(args.out)}")
  for path, reason in skipped:
    print(f"skipped {path}: {reason}")
  return 0 if done else 1


if __name__ == "__main__":
  sys.exit(main())
