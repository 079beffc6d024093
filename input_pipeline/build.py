"""Builds a dataset:

  python -m input_pipeline.build --dataset=NAME --manual_dir=DIR --data_dir=DIR --image_size=S

NAME: embedded_faces, embedded_photos (no files needed; --photo_dir adds photographs), face_images (a folder tree of photos, optional .pts),
face_videos (videos or frame folders, 300VW layout, or the output of input_pipeline.mining).
Shows a progress bar, then prints the examples per split and what was skipped and why; the same
summary is written as build_report.json / build_report.txt beside the dataset's files.
Builder options (--margin, --test_fraction, ...; see --help) default to the builder's defaults;
non-default options get their own config name.
The build records its source (build_source.json); run again with a --manual_dir whose files
changed, the command stops with one line unless --overwrite is given (then it rebuilds).
Expected failures print one line on stderr; exit codes as in fdeblur/errors.py.
"""
import logging

from absl import app, flags

from fdeblur import config_lib, errors
from input_pipeline import datasets, pipeline
from input_pipeline.datasets import common, embedded_photos, face_videos

_DATASET = flags.DEFINE_enum("dataset", "embedded_faces", sorted(datasets.BUILDERS),
                             "Which TFDS builder to run.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Output directory ('' = TFDS default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The user's files, for builders that read them.")
_SIZE = flags.DEFINE_integer("image_size", 64, "Face crop size in pixels.")
# The builder options: one flag per field of the face builders' config (their defaults).
_OPTIONS = common.define_flags(face_videos.FaceVideosConfig)
_OPTIONS += common.define_flags(embedded_photos.EmbeddedPhotosConfig, skip=_OPTIONS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild a dataset whose source files changed "
                               "since it was built (deletes that build).")


def main(argv):
  if len(argv) > 1:
    errors.exit_with("input_pipeline.build", errors.UsageError(
        f"unexpected arguments: {' '.join(argv[1:])}"))
  errors.quiet_library_logs(logging.ERROR)
  cfg = config_lib.dataset_config(
      name=_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
      image_size=_SIZE.value, **{name: flags.FLAGS[name].value for name in _OPTIONS})
  try:
    builder = pipeline.build(cfg, overwrite=_OVERWRITE.value)
  except errors.UserError as e:
    errors.exit_with("input_pipeline.build", e)
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
  app.run(main, flags_parser=errors.flags_parser("input_pipeline.build"))
