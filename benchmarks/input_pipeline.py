"""Input-pipeline throughput: examples/s of the grain training stream (decode + augment + batch)
with 0 (threads only), 1 and 2 worker processes, at 128^2 and 256^2.

  python -m benchmarks.input_pipeline [--dataset=face_images] [--manual_dir=DIR]
      [--data_dir=DIR] [--sizes=128,256] [--workers=0,1,2] [--batch_size=32] [--batches=40]
      [--clip_length=1]

Without --manual_dir, face_images is built from the face photographs that installed packages
ship (the embedded dataset's sources), saved as JPEG files, one identity folder each, so the
benchmark measures what a user's folder of photos costs (PNG crops decoded in grain).
The first batch (worker start-up included) is timed separately; every run checks that workers
produce the same batches as the single-process pipeline.
"""
import copy
import os
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags

_DATASET = flags.DEFINE_string("dataset", "face_images", "TFDS builder name.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The user's files ('' = shipped photos).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Where datasets are built ('' = a temp dir).")
_SIZES = flags.DEFINE_list("sizes", ["128", "256"], "Image sizes.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker process counts.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Examples per batch.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per setting.")
_CLIP = flags.DEFINE_integer("clip_length", 1, "Frames per example (video datasets).")


def shipped_photos_folder(path: str) -> str:
  from input_pipeline.datasets import embedded_faces  # noqa: PLC0415
  if not os.path.isdir(path):
    for name, image in embedded_faces.face_photographs():
      folder = os.path.join(path, name.replace("/", "_"))
      os.makedirs(folder, exist_ok=True)
      cv2.imwrite(os.path.join(folder, "photo.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  return path


def run(cfg, workers: int, batches: int, batch_size: int):
  from input_pipeline import pipeline  # noqa: PLC0415
  cfg = copy.deepcopy(cfg)
  cfg.worker_count = workers
  ds = pipeline.train_dataset(cfg, seed=0, local_batch_size=batch_size)
  t0 = time.perf_counter()
  it = pipeline.iterate(ds, 0, cfg)
  first = next(it)
  startup = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * batch_size / (time.perf_counter() - t0)
  if hasattr(it, "close"):
    it.close()
  return rate, startup, first["image"]


def main(argv):
  del argv
  from fdeblur import config_lib  # noqa: PLC0415
  from input_pipeline import pipeline  # noqa: PLC0415
  data_dir = _DATA_DIR.value or os.path.join(tempfile.gettempdir(), "fdeblur_bench_tfds")
  manual = _MANUAL_DIR.value
  if not manual and _DATASET.value == "face_images":
    manual = shipped_photos_folder(os.path.join(data_dir, "shipped_photos"))
  print(f"dataset {_DATASET.value}, batch {_BATCH.value}, {_BATCHES.value} timed batches, "
        f"clip_length {_CLIP.value}, {os.cpu_count()} CPU cores")
  print(f"| size | workers | examples/s | first batch (s) | same batches as 0 workers |")
  print(f"|---:|---:|---:|---:|:---|")
  for size in [int(s) for s in _SIZES.value]:
    cfg = config_lib.dataset_config(name=_DATASET.value, data_dir=data_dir, manual_dir=manual,
                                    image_size=size, clip_length=_CLIP.value, log_every=0)
    pipeline.build(cfg)
    reference = None
    for workers in [int(w) for w in _WORKERS.value]:
      rate, startup, first = run(cfg, workers, _BATCHES.value, _BATCH.value)
      if reference is None:
        reference = first
      same = "yes" if np.array_equal(first, reference) else "NO"
      print(f"| {size} | {workers} | {rate:.0f} | {startup:.1f} | {same} |", flush=True)


if __name__ == "__main__":
  app.run(main)
