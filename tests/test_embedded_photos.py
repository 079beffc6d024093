"""The `embedded_photos` build: counts, split by photograph, held-out photographs never read,
native-scale patches that are the photograph's own pixels."""
import collections
import os

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fdeblur import config_lib
from input_pipeline import faces_crop, pipeline
from input_pipeline.datasets import embedded_photos as ep

SIZE = 64


def _expected_count(name, path, kind, cfg, train):
  image = ep.read_photo(path)
  if kind == ep.FACE:
    faces = len(faces_crop.detect_faces(image))
  elif kind == ep.UNKNOWN:  # the user's folder: confident detections only
    faces = len(faces_crop.detect_checked(image, max_side=max(image.shape[:2]),
                                          min_votes=faces_crop.SURE_VOTES)[0])
  else:
    faces = 0
  per_scale = faces * (cfg.face_patches if train else 1) + (cfg.random_patches if train else 4)
  return sum(per_scale for s in ep.SCALES
             if min(round(d * s) for d in image.shape[:2]) >= cfg.image_size)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  extra = root / "extra"
  (extra / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  cv2.imwrite(str(extra / "sub" / "noise.png"), rng.integers(0, 255, (80, 100, 3), np.uint8))
  cv2.imwrite(str(extra / "lena_copy.png"), rng.integers(0, 255, (80, 80, 3), np.uint8))
  # a portrait in the user's folder: its face is found (31 votes at this size) and gets patches
  portrait = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
  cv2.imwrite(str(extra / "portrait.png"), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
  cfg = config_lib.dataset_config(
      name="embedded_photos", data_dir=str(root / "tfds"), image_size=SIZE, face_patches=2,
      random_patches=1, photo_dir=str(extra))
  builder = pipeline.build(cfg)
  return cfg, builder


def _sources(cfg, split):
  src = pipeline.data_source(cfg, split)
  out = collections.Counter()
  for i in range(len(src)):
    s = src[i]["source"]
    out[s.decode() if isinstance(s, bytes) else str(s)] += 1
  return out


def test_counts_per_photograph_and_split(built):
  cfg, builder = built
  bcfg = builder.builder_config
  assert (bcfg.image_size, bcfg.face_patches, bcfg.random_patches) == (SIZE, 2, 1)
  for split in ("train", "test"):
    got = _sources(cfg, split)
    want = {}
    for name, path, kind in ep.photographs(cfg.photo_dir):
      if ep.split_of(name) == split:
        n = _expected_count(name, path, kind, bcfg, split == "train")
        if n:
          want[name] = n
    assert dict(got) == want
  # the optional folder: its photos are train photographs; a "lena" file is never read
  train = _sources(cfg, "train")
  assert "photo_dir/sub/noise" in train and not any("lena" in n for n in train)


def test_photo_dir_faces_get_face_patches(built):
  """A face in the user's folder gets its jittered face patches at every scale (256 px photo: all
  three fit a 64 px patch); pure noise gets none."""
  cfg, _ = built
  src = pipeline.data_source(cfg, "train")
  kinds = collections.defaultdict(collections.Counter)
  for i in range(len(src)):
    ex = src[i]
    name = ex["source"].decode() if isinstance(ex["source"], bytes) else str(ex["source"])
    if name.startswith("photo_dir/"):
      kinds[name][int(ex["kind"])] += 1
  # kind 0 is "face" (random patches that overlap the face count too)
  assert kinds["photo_dir/portrait"][0] >= len(ep.SCALES) * cfg.face_patches
  assert kinds["photo_dir/sub/noise"][0] == 0


def test_no_photograph_in_two_splits_and_groups_together(built):
  cfg, _ = built
  train, test = set(_sources(cfg, "train")), set(_sources(cfg, "test"))
  assert train and test and not train & test
  assert {ep.group_of(n) for n in train}.isdisjoint({ep.group_of(n) for n in test})
  assert ep.split_of("skimage/motorcycle_left") == ep.split_of("skimage/motorcycle_right")
  assert {"matplotlib/grace_hopper", "skimage/coffee"} <= test


def test_held_out_photographs_are_never_read():
  names = [n.lower() for n, _, _ in ep.photographs()]
  paths = [p.lower() for _, p, _ in ep.photographs()]
  for held in ep.HELD_OUT:
    assert not any(held in x for x in names + paths), held
  # and every face photograph the docstring promises is there
  assert {"skimage/astronaut", "skimage/camera", "matplotlib/grace_hopper", "mahotas/luispedro",
          "insightface/t1"} <= set(names)


def test_native_patches_are_the_photographs_pixels(built):
  cfg, _ = built
  src = pipeline.data_source(cfg, "train")
  photos = {n: p for n, p, _ in ep.photographs(cfg.photo_dir)}
  checked = collections.Counter()
  for i in range(len(src)):
    ex = src[i]
    name = ex["source"].decode() if isinstance(ex["source"], bytes) else str(ex["source"])
    patch = pipeline._decode_one(ex)["image"]
    assert patch.shape == (SIZE, SIZE, 3)
    scale = float(ex["scale"])
    image = ep.read_photo(photos[name])
    if scale != 1.0:
      h, w = (int(round(d * scale)) for d in image.shape[:2])
      image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    x0, y0 = (int(v) for v in ex["corner"])
    np.testing.assert_array_equal(patch, image[y0:y0 + SIZE, x0:x0 + SIZE])
    checked[scale] += 1
    if checked[1.0] >= 3 and checked[0.5] >= 3:
      break
  assert checked[1.0] >= 3 and checked[0.5] >= 3


def test_face_patches_hold_the_face(built):
  cfg, _ = built
  src = pipeline.data_source(cfg, "test")
  boxes = [np.asarray(src[i]["box"]) for i in range(len(src))
           if int(src[i]["kind"]) == 0]  # "face"
  assert boxes and all(b[2] > 0 and b[3] > 0 for b in boxes)
  assert all((b[:2] >= 0).all() and (b[:2] + b[2:] <= SIZE + 1e-3).all() for b in boxes)


def test_photo_dir_must_exist(tmp_path):
  with pytest.raises(FileNotFoundError, match="photo_dir"):
    list(ep.photographs(str(tmp_path / "missing")))


def test_mahotas_photographs_resolve():
  path = ep._resolve("mahotas:luispedro.jpg")
  assert os.path.isfile(path) and path.endswith(os.path.join("demos", "data", "luispedro.jpg"))
