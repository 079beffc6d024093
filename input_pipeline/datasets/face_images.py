"""`face_images`: any folder tree of face photographs (CelebA, FFHQ, LFW, 300W, ...).

manual_dir layout: images (.jpg .jpeg .png .bmp .ppm .pgm .tif .webp) anywhere below it;
optionally a 68-point `.pts` file (300W format, 1-based (x, y)) beside an image with the same
stem. Identities are top-level folders (LFW/VGGFace2 style); an image at the top level is its own
identity. Train/test are split by identity (see `common` for the rule).

Each image gives one example: the face aligned as in the 2017 paper (Chrysos & Zafeiriou, Sec.
3.4): located by its landmarks when a `.pts` is given, else by OpenCV's Haar detector (largest
face that passes the confidence threshold and the landmark check: an eye in the box's upper part,
see `faces_crop.eye_check`), rescaled by the landmark (or box) extent and cropped square with `margin` at
`image_size`. Landmarks are mapped into crop coordinates. Unreadable images, bad `.pts` files,
images without an accepted face (with the checks' reasons) and empty folders are skipped and listed in build_report.json.
"""
import os

import tensorflow_datasets as tfds
import tqdm

from fdeblur import errors
from input_pipeline import faces_crop
from input_pipeline.datasets import common


class FaceImages(tfds.core.GeneratorBasedBuilder):
  """Face crops (with 68 landmarks when given) from a folder tree of photographs."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Folder tree of images, optional .pts landmarks, identity splits.",
                   "1.1.0": "Detections pass a vote threshold and the eye (landmark) check; "
                            "the source folder is recorded (build_source.json)."}
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
      for n in names:
        if n.lower().endswith(common.IMAGE_EXTS):
          files.append(os.path.relpath(os.path.join(dirpath, n), root))
        elif not n.lower().endswith(common.SIDECAR_EXTS):
          self._report.note("files of other types ignored")
    if not files:
      raise errors.DataError(f"face_images: no images ({' '.join(common.IMAGE_EXTS)}) under "
                             f"--manual_dir {root}")
    # Pass 1 (threads): read, locate the face; failures are skipped before the split is drawn,
    # so that every split holds at least one usable identity.
    plans = common.ordered_map(lambda rel: (rel, self._plan(root, rel)), files)
    located = [(rel, plan) for rel, plan in tqdm.tqdm(
        plans, total=len(files), desc=f"{self.name}: locating faces", unit="image",
        mininterval=1.0) if plan is not None]
    if not located:
      self._report.write(os.fspath(self.data_dir))
      raise common.nothing_usable("face_images", root, "face", self._report)
    by_split = common.split_items(located, lambda item: common.group_of(item[0]),
                                  self.builder_config, self._report, "identities")
    return {split: self._generate_examples(root, items, split)
            for split, items in by_split.items()}

  def _plan(self, root, rel):
    """(landmarks or None, box or None) of the face in one image, or None (skipped)."""
    image = common.read_image(os.path.join(root, rel))
    if image is None:
      self._report.skip(rel, "unreadable image")
      return None
    pts_path = os.path.splitext(os.path.join(root, rel))[0] + ".pts"
    if os.path.exists(pts_path):
      try:
        points = faces_crop.read_pts(pts_path)
      except (ValueError, OSError) as e:
        self._report.skip(rel, f"unreadable landmarks file ({e.__class__.__name__})")
        return None
      if len(points) != common.NUM_LANDMARKS:
        self._report.note(f"landmarks with other than {common.NUM_LANDMARKS} points "
                          "(used for the crop, not stored)")
      return points, None
    found, rejected = common.detect(image, self.builder_config)
    if rejected:
      self._report.note("face candidates rejected by the checks", len(rejected))
    if not found:
      self._report.skip(rel, common.rejection_text(rejected) if rejected else "no face detected")
      return None
    if len(found) > 1:
      self._report.note("images with several faces (largest kept)")
    return None, found[0][0]

  def _generate_examples(self, root, items, split):
    n = 0
    examples = common.ordered_map(lambda item: (item[0], self._example(root, *item)), items)
    for rel, example in tqdm.tqdm(examples, total=len(items), desc=f"{self.name} {split}",
                                  unit="image", mininterval=1.0):
      if example is None:
        self._report.skip(rel, "unreadable image (on the second read)", split)
        continue
      n += 1
      yield rel, example
    self._report.examples[split] = n
    self._report.write(self.data_dir)

  def _example(self, root, rel, plan):
    cfg = self.builder_config
    image = common.read_image(os.path.join(root, rel))
    if image is None:
      return None
    points, box = plan
    example = common.crop_example(image, common.align(points, box, cfg.margin), points, box, cfg)
    example.update(source=rel.replace(os.sep, "/"), identity=common.group_of(rel))
    return example
