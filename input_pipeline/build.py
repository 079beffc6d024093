"""Builds a dataset: python -m input_pipeline.build --dataset=NAME --data_dir=DIR [--manual_dir=DIR]."""
from absl import app, flags

from input_pipeline import datasets, pipeline
import ml_collections

_DATASET = flags.DEFINE_enum("dataset", "embedded_faces", sorted(datasets.BUILDERS),
                             "Which TFDS builder to run.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Output directory ('' = TFDS default).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The user's files, for builders that read them.")
_SIZE = flags.DEFINE_integer("image_size", 64, "Face crop size in pixels.")


def main(argv):
  del argv
  cfg = ml_collections.ConfigDict({"name": _DATASET.value, "data_dir": _DATA_DIR.value,
                                   "manual_dir": _MANUAL_DIR.value, "image_size": _SIZE.value})
  builder = pipeline.build(cfg)
  for split, info in builder.info.splits.items():
    print(f"{builder.info.full_name} {split}: {info.num_examples} examples")
  print(f"written to {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
