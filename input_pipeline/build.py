"""Builds a dataset:

  python -m input_pipeline.build --dataset=NAME --manual_dir=DIR --data_dir=DIR --image_size=S

NAME: embedded_faces (no files needed), face_images (a folder tree of photos, optional .pts),
face_videos (videos or frame folders, 300VW layout, or the output of input_pipeline.mining).
Shows a progress bar, then prints the examples per split and what was skipped and why; the same
summary is written as build_report.json / build_report.txt beside the dataset's files.
Options left unset keep the builder's defaults; non-default options get their own config name.
"""
from absl import app, flags

from input_pipeline import datasets, pipeline
import ml_collections

_DATASET = flags.DEFINE_enum("dataset", "embedded_faces", sorted(datasets.BUILDERS),
                             "Which TFDS builder to run.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Output directory ('' = TFDS default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The user's files, for builders that read them.")
_SIZE = flags.DEFINE_integer("image_size", 64, "Face crop size in pixels.")
_MARGIN = flags.DEFINE_float("margin", None, "Crop side / face (landmark or box) extent.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", None,
                                    "Fraction of identities/videos in the test split.")
_SALT = flags.DEFINE_string("split_salt", None, "Salt of the split hash (another split).")
_FORMAT = flags.DEFINE_enum("image_format", None, ["png", "jpeg", "raw"], "Stored crop format.")
_SMOOTH = flags.DEFINE_float("temporal_smoothing", None,
                             "face_videos: Gaussian sigma (frames) of the crop trajectory.")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", None, "face_videos: frames per video (0 = all).")


def main(argv):
  del argv
  cfg = ml_collections.ConfigDict({"name": _DATASET.value, "data_dir": _DATA_DIR.value,
                                   "manual_dir": _MANUAL_DIR.value, "image_size": _SIZE.value})
  options = {"margin": _MARGIN.value, "test_fraction": _TEST_FRACTION.value,
             "split_salt": _SALT.value, "image_format": _FORMAT.value,
             "temporal_smoothing": _SMOOTH.value, "max_frames": _MAX_FRAMES.value}
  for key, value in options.items():
    if value is not None:
      cfg[key] = value
  builder = pipeline.build(cfg)
  for split, info in builder.info.splits.items():
    print(f"{builder.info.full_name} {split}: {info.num_examples} examples")
  report = pipeline.build_report(cfg)
  if report is not None:
    counts = report["skipped_counts"]
    print(f"skipped {len(report['skipped'])}" + (": " + ", ".join(
        f"{n} {reason}" for reason, n in sorted(counts.items())) if counts else ""))
    for s in report["skipped"][:20]:
      print(f"  {s['path']}: {s['reason']}")
    for note, n in sorted(report["notes"].items()):
      print(f"note: {note}: {n}")
    print(f"report: {builder.data_dir}/build_report.json")
  print(f"written to {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
