"""`face_images`: any folder tree of face photographs (CelebA, FFHQ, LFW, 300W, ...).

manual_dir layout: images (.jpg .jpeg .png .bmp .ppm .pgm .tif .webp) anywhere below it;
optionally a 68-point `.pts` file (300W format, 1-based (x, y)) beside an image with the same
stem. Identities are top-level folders (LFW/VGGFace2 style); an image at the top level is its own
identity. Train/test are split by identity (see `common` for the rule).

Each image gives one example: the face aligned as in the 2017 paper (Chrysos & Zafeiriou, Sec.
3.4): located by its landmarks when a `.pts` is given, else by OpenCV's Haar detector (largest
face), rescaled by the landmark (or box) extent and cropped square with `margin` at
`image_size`. Landmarks are mapped into crop coordinates. Unreadable images, bad `.pts` files,
images without a detected face and empty folders are skipped and listed in build_report.json.
"""
import os

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from input_pipeline import faces_crop
from input_pipeline.datasets import common


class FaceImages(tfds.core.GeneratorBasedBuilder):
  """Face crops (with 68 landmarks when given) from a folder tree of photographs."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Folder tree of images, optional .pts landmarks, identity splits."}
  BUILDER_CONFIGS = [common.FaceConfig(name=f"{s}px", image_size=s) for s in (64, 128, 256)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass --manual_dir=DIR: a folder tree of face images (identities = top-level folders), "
      "optionally with 68-point .pts files beside the images.")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict(common.face_features(self.builder_config)),
        supervised_keys=None)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    self._report = common.BuildReport(self.name)
    files = []
    for dirpath, names in common.walk(root, self._report):
      images = [n for n in names if n.lower().endswith(common.IMAGE_EXTS)]
      for n in names:
        if not n.lower().endswith(common.IMAGE_EXTS + common.SIDECAR_EXTS):
          self._report.note("files of other types ignored")
      files += [os.path.relpath(os.path.join(dirpath, n), root) for n in images]
    if not files:
      raise ValueError(f"face_images: no images ({' '.join(common.IMAGE_EXTS)}) under {root}")
    split_of = common.assign_splits([common.group_of(f) for f in files],
                                    self.builder_config.test_fraction,
                                    self.builder_config.split_salt)
    by_split = {"train": [], "test": []}
    for f in files:
      by_split[split_of[common.group_of(f)]].append(f)
    self._report.groups = {s: len({common.group_of(f) for f in fs}) for s, fs in by_split.items()}
    return {split: self._generate_examples(root, fs, split) for split, fs in by_split.items()}

  def _generate_examples(self, root, files, split):
    n = 0
    for rel in tqdm.tqdm(files, desc=f"{self.name} {split}", unit="image", mininterval=1.0):
      example = self._example(root, rel, split)
      if example is not None:
        n += 1
        yield rel, example
    self._report.examples[split] = n
    self._report.write(self.data_dir)

  def _example(self, root, rel, split):
    cfg = self.builder_config
    image = common.read_image(os.path.join(root, rel))
    if image is None:
      self._report.skip(rel, "unreadable image", split)
      return None
    points, box = None, None
    pts_path = os.path.splitext(os.path.join(root, rel))[0] + ".pts"
    if os.path.exists(pts_path):
      try:
        points = faces_crop.read_pts(pts_path)
      except (ValueError, OSError) as e:
        self._report.skip(rel, f"unreadable landmarks file ({e.__class__.__name__})", split)
        return None
      if len(points) != common.NUM_LANDMARKS:
        self._report.note(f"landmarks with other than {common.NUM_LANDMARKS} points "
                          "(used for the crop, not stored)")
    else:
      boxes = faces_crop.detect_faces_scaled(image, min_size=cfg.min_face)
      if not boxes:
        self._report.skip(rel, "no face detected", split)
        return None
      if len(boxes) > 1:
        self._report.note("images with several faces (largest kept)")
      box = boxes[0]
    alignment = common.align(points, box, cfg.margin)
    example = common.crop_example(image, alignment, points, box, cfg)
    example.update(source=rel.replace(os.sep, "/"), identity=common.group_of(rel))
    return example
