"""`embedded_faces`: the default dataset, built offline from photographs that installed packages ship.

Faces (located by OpenCV's Haar cascades, cropped square with margin):
  scikit-image `astronaut` (Eileen Collins), `camera` (the cameraman, profile cascade),
  matplotlib's `grace_hopper.jpg`, and the 100 face images of scikit-image's `lfw_subset`
  (25x25 grayscale crops from Labeled Faces in the Wild, enlarged 4x before detection).
Textures (train only, extra natural-image content for the small face set): random crops of
  scikit-image's chelsea, coffee, rocket, motorcycle_left, hubble_deep_field, brick, grass, gravel,
  coins, moon, page, text and immunohistochemistry photographs.

Split by source photograph: grace_hopper and every fifth LFW face are test, the rest train, so no
photograph contributes to both. Train faces are stored as several jittered crops (scale and shift),
test faces as one canonical crop. Images are uint8 tensors (no TensorFlow needed to write them).
"""
import dataclasses
import os

import cv2
import matplotlib
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from skimage import data as skdata
from skimage import io as skio

from input_pipeline import faces_crop

FACE_MARGIN = 1.6  # crop side = FACE_MARGIN x detector box side
TRAIN_JITTERS = 8  # jittered crops per training face
TEXTURE_CROPS = 32  # random crops per texture photograph
LFW_UPSCALE = 4
DETECT_PAD = 30
TEXTURES = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
            "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "coins.png",
            "moon.png", "page.png", "text.png", "ihc.png")  # files in skimage/data/
SKIMAGE_DATA = os.path.dirname(skdata.__file__)


def _rgb(image: np.ndarray) -> np.ndarray:
  if image.dtype != np.uint8:
    image = np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return image[..., :3]


def face_photographs():
  """(name, RGB uint8 photo) of every face photograph the installed packages ship."""
  yield "skimage/astronaut", _rgb(skdata.astronaut())
  yield "skimage/camera", _rgb(skdata.camera())
  hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
  yield "matplotlib/grace_hopper", _rgb(skio.imread(hopper))
  lfw = skdata.lfw_subset()[:100]  # the first 100 are faces, the rest non-faces
  for i, face in enumerate(lfw):
    yield f"skimage/lfw_subset/{i:03d}", cv2.resize(
        _rgb(face), None, fx=LFW_UPSCALE, fy=LFW_UPSCALE, interpolation=cv2.INTER_CUBIC)


def is_test(name: str) -> bool:
  if name == "matplotlib/grace_hopper":
    return True
  return name.startswith("skimage/lfw_subset/") and int(name.rsplit("/", 1)[1]) % 5 == 0


@dataclasses.dataclass
class EmbeddedFacesConfig(tfds.core.BuilderConfig):
  image_size: int = 64


class EmbeddedFaces(tfds.core.GeneratorBasedBuilder):
  """Real face photographs shipped by scikit-image and matplotlib, plus texture crops."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Faces from scikit-image and matplotlib; OpenCV Haar detection."}
  BUILDER_CONFIGS = [EmbeddedFacesConfig(name=f"{s}px", image_size=s) for s in (32, 64, 128, 256)]

  def _info(self):
    s = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
            "source": tfds.features.Text(),  # source photograph: splits are disjoint on it
            "kind": tfds.features.ClassLabel(names=["face", "texture"]),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),  # (x, y, w, h) in the crop
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    faces = [(n, img, box) for n, img in face_photographs() if (box := self._detect(n, img))]
    return {
        "train": self._generate_examples(
            [f for f in faces if not is_test(f[0])], textures=True, jitter=True),
        "test": self._generate_examples(
            [f for f in faces if is_test(f[0])], textures=False, jitter=False),
    }

  @staticmethod
  def _detect(name, image):
    # LFW crops are tight: the cascade needs some context around the face, so detect on a
    # border-replicated copy and shift the box back.
    pad = DETECT_PAD if name.startswith("skimage/lfw_subset/") else 0
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    boxes = faces_crop.detect_faces(padded)
    if not boxes:
      logging.warning("embedded_faces: no face detected in %s; skipped", name)
      return None
    x, y, w, h = boxes[0]
    return x - pad, y - pad, w, h

  def _generate_examples(self, faces, textures: bool, jitter: bool):
    size = self.builder_config.image_size
    for name, image, (x, y, w, h) in faces:
      rng = np.random.default_rng(_stable_seed(name))
      for j in range(TRAIN_JITTERS if jitter else 1):
        scale = rng.uniform(0.85, 1.15) if jitter else 1.0
        shift = rng.uniform(-0.08, 0.08, size=2) * w if jitter else np.zeros(2)
        # Crops stay inside the photograph (no replicated-border streaks): shrink the margin
        # and shift the centre where the face is near the border.
        hgt, wid = image.shape[:2]
        side = min(FACE_MARGIN * max(w, h) * scale, hgt, wid)
        cx = np.clip(x + w / 2 + shift[0], side / 2, wid - side / 2)
        cy = np.clip(y + h / 2 + shift[1], side / 2, hgt - side / 2)
        crop = faces_crop.square_crop(image, (cx, cy), side, size)
        if jitter and rng.uniform() < 0.5:
          crop = crop[:, ::-1]
        m = size / side  # the detector box in crop coordinates
        x0, y0 = np.clip([(x - cx) * m + size / 2, (y - cy) * m + size / 2], 0, size)
        x1, y1 = np.clip([(x + w - cx) * m + size / 2, (y + h - cy) * m + size / 2], 0, size)
        box = np.array([x0, y0, x1 - x0, y1 - y0], np.float32)  # clipped to the crop
        yield f"{name}/{j}", {"image": np.ascontiguousarray(crop), "source": name,
                              "kind": "face", "box": box}
    if not textures:
      return
    for tex in TEXTURES:
      image = _rgb(skio.imread(os.path.join(SKIMAGE_DATA, tex)))
      rng = np.random.default_rng(_stable_seed(tex))
      hgt, wid = image.shape[:2]
      for j in range(TEXTURE_CROPS):
        side = rng.uniform(size, max(size + 1, min(hgt, wid) / 2))
        cx, cy = rng.uniform(side / 2, wid - side / 2), rng.uniform(side / 2, hgt - side / 2)
        crop = faces_crop.square_crop(image, (cx, cy), side, size)
        yield f"texture/{tex.split('.')[0]}/{j}", {"image": crop, "source": f"skimage/{tex.split('.')[0]}",
                                     "kind": "texture", "box": np.zeros(4, np.float32)}


def _stable_seed(name: str) -> int:
  # Python's hash() is salted per process; builds must be reproducible.
  return int.from_bytes(name.encode()[-8:].rjust(8, b"\0"), "little") % 2**32
