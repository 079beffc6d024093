"""face_images / face_videos builders and the grain pipeline on small generated fixtures.

Fixtures are made from a real face photograph (scikit-image's astronaut) with two coloured dots
painted on it at two landmark positions (red: point 30, the nose tip; blue: point 36, an eye
corner), then moved by known similarity transforms (photos) or along a known path (videos): a
stored landmark must sit on its dot in every crop, which checks the whole chain .pts ->
alignment -> crop -> augmentation without trusting the code's own geometry.
"""
import copy
import dataclasses
import os

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fdeblur import config_lib
from input_pipeline import faces_crop, pipeline
from input_pipeline.datasets import common

SIZE = 64
WITH_PTS = ("id_a/a1.png", "id_b/b1.png", "id_c/c1.ppm", "id_d/d1.png", "loose.png")
FRAMES = 12
# Landmark-to-dot tolerance (pixels). The bar is one pixel; the geometry is exact up to
# interpolation (measured errors ~0.1 px), so 0.35 also catches half-pixel convention slips.
TOL = 0.35

# 68-point template in a unit face box (u right, v down), iBUG order.
_T = np.array(
    [[0.5 + 0.5 * np.cos(np.pi - np.pi * k / 16), 0.45 + 0.55 * np.sin(np.pi * k / 16)]
     for k in range(17)]
    + [[0.12 + 0.075 * k, 0.25] for k in range(5)] + [[0.58 + 0.075 * k, 0.25] for k in range(5)]
    + [[0.5, 0.35 + 0.09 * k] for k in range(4)] + [[0.40 + 0.05 * k, 0.68] for k in range(5)]
    + [[0.20, 0.40], [0.26, 0.37], [0.34, 0.37], [0.40, 0.40], [0.34, 0.43], [0.26, 0.43]]
    + [[0.60, 0.40], [0.66, 0.37], [0.74, 0.37], [0.80, 0.40], [0.74, 0.43], [0.66, 0.43]]
    + [[0.35, 0.80], [0.40, 0.77], [0.45, 0.76], [0.5, 0.77], [0.55, 0.76], [0.60, 0.77],
       [0.65, 0.80], [0.60, 0.85], [0.55, 0.87], [0.5, 0.88], [0.45, 0.87], [0.40, 0.85]]
    + [[0.38, 0.80], [0.45, 0.79], [0.5, 0.79], [0.55, 0.79], [0.62, 0.80], [0.55, 0.82],
       [0.5, 0.82], [0.45, 0.82]], np.float64)


def _face():
  """256x256 astronaut with a red dot at landmark 30 and a blue dot at landmark 36."""
  image = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
  x, y, w, h = faces_crop.detect_faces(image)[0]
  points = np.stack([x + _T[:, 0] * w, y + _T[:, 1] * h], -1)
  for k, colour in ((30, (255, 0, 0)), (36, (0, 0, 255))):
    cx, cy = points[k]
    cv2.circle(image, (round(cx * 16), round(cy * 16)), 3 * 16, colour, -1, cv2.LINE_AA, 4)
  return image, points


def _dot(image, colour):
  """Centroid (x, y) of the red or blue dot."""
  im = image.astype(np.float64)
  r, g, b = im[..., 0], im[..., 1], im[..., 2]
  w = np.clip(r - np.maximum(g, b) - 100, 0, None) if colour == "red" else np.clip(
      b - np.maximum(r, g) - 60, 0, None)
  assert w.sum() > 0, f"no {colour} dot visible"
  ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
  return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def _similar(image, points, scale, angle, shift):
  c = (np.array(image.shape[1::-1]) - 1) / 2
  mat = cv2.getRotationMatrix2D(tuple(c), angle, scale)
  mat[:, 2] += shift
  out = cv2.warpAffine(image, mat, image.shape[1::-1], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)
  return out, points @ mat[:, :2].T + mat[:, 2]


def _write(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _noface(h=256, w=256):
  yy, xx = np.mgrid[:h, :w]
  return np.stack([xx % 256, yy % 256, (xx + yy) // 2 % 256], -1).astype(np.uint8)


def _cfg(name, data_dir, manual_dir, **kw):
  return config_lib.dataset_config(name=name, data_dir=str(data_dir), manual_dir=str(manual_dir),
                                   image_size=SIZE, test_fraction=0.5, **kw)


def _all(cfg, split):
  src = pipeline.data_source(cfg, split)
  return [src[i] for i in range(len(src))]


def _str(x):
  return x.decode() if isinstance(x, bytes) else str(x)


# --- face_images --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images_cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp("face_images_manual")
  face, points = _face()
  transforms = [(1.0, 0, (0, 0)), (0.8, 8, (20, -10)), (1.3, -5, (-15, 10)), (1.1, 0, (5, 5)),
                (0.9, 3, (0, 12))]  # (scale, degrees, shift) of each photo with a .pts
  with_pts = dict(zip(WITH_PTS, transforms))
  for rel, (s, a, t) in with_pts.items():
    image, pts = _similar(face, points, s, a, t)
    _write(os.path.join(root, rel), image)
    faces_crop.write_pts(os.path.splitext(os.path.join(root, rel))[0] + ".pts", pts)
  for rel, (s, t) in {"id_a/a2.jpg": (1.2, (10, 0)), "id_b/sub/b2.bmp": (1.0, (-8, 4)),
                      "id_e/e1.png": (0.9, (6, -6))}.items():
    _write(os.path.join(root, rel), _similar(face, points, s, 0, t)[0])
  _write(os.path.join(root, "id_c/c2.png"), _noface())  # no face
  with open(os.path.join(root, "id_d/broken.jpg"), "wb") as f:  # unreadable image
    f.write(b"\xff\xd8 this is not a jpeg" * 10)
  _write(os.path.join(root, "id_f/f1.png"), face)
  with open(os.path.join(root, "id_f/f1.pts"), "w") as f:  # malformed landmarks
    f.write("version: 1\nn_points: 68\n{\n1 2\n3\n}\n")
  os.makedirs(os.path.join(root, "empty_folder"))
  cfg = _cfg("face_images", tmp_path_factory.mktemp("face_images_tfds"), root)
  pipeline.build(cfg)
  return cfg


def test_face_images_counts_shapes_and_skips(images_cfg):
  train, test = _all(images_cfg, "train"), _all(images_cfg, "test")
  sources = sorted(_str(x["source"]) for x in train + test)
  assert sources == sorted(["id_a/a1.png", "id_a/a2.jpg", "id_b/b1.png", "id_b/sub/b2.bmp",
                            "id_c/c1.ppm", "id_d/d1.png", "id_e/e1.png", "loose.png"])
  for ex in train + test:
    image = common.decode(ex["image"])
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert ex["landmarks"].shape == (68, 2)
    assert bool(ex["has_landmarks"]) == (_str(ex["source"]) in WITH_PTS)
  report = pipeline.build_report(images_cfg)
  reasons = {s["path"]: s["reason"] for s in report["skipped"]}
  assert reasons == {"id_c/c2.png": "no face detected", "id_d/broken.jpg": "unreadable image",
                     "id_f/f1.png": "unreadable landmarks file (ValueError)",
                     "empty_folder": "empty folder"}
  assert report["examples"] == {"train": len(train), "test": len(test)}


def test_face_images_split_by_identity(images_cfg):
  train, test = _all(images_cfg, "train"), _all(images_cfg, "test")
  ids = lambda xs: {_str(x["identity"]) for x in xs}
  assert train and test and not ids(train) & ids(test)
  assert {_str(x["identity"]) for x in train + test if _str(x["source"]).startswith("id_b")} == {
      "id_b"}  # a nested folder belongs to its top-level identity


def test_face_images_landmarks_land_on_the_face_point(images_cfg):
  checked = 0
  for ex in _all(images_cfg, "train") + _all(images_cfg, "test"):
    if not ex["has_landmarks"]:
      continue
    image = common.decode(ex["image"])
    np.testing.assert_allclose(_dot(image, "red"), ex["landmarks"][30], atol=TOL)
    np.testing.assert_allclose(_dot(image, "blue"), ex["landmarks"][36], atol=TOL)
    # the face is rescaled by its landmark extent: the extent fills SIZE / margin
    extent = (ex["landmarks"].max(0) - ex["landmarks"].min(0)).max()
    assert abs(extent - SIZE / 1.6) < 1.0
    checked += 1
  assert checked == 5


def test_augment_mirrors_landmarks_and_moves_them_with_the_image(images_cfg):
  src = pipeline.data_source(images_cfg, "train") if any(
      x["has_landmarks"] for x in _all(images_cfg, "train")) else pipeline.data_source(
          images_cfg, "test")
  ex = next(pipeline.Decode().map(src[i]) for i in range(len(src)) if src[i]["has_landmarks"])
  flip = pipeline.Augment(flip=True, scale_jitter=0, translate_jitter=0, colour_jitter=0)
  flipped = [flip.random_map(ex, np.random.default_rng(s)) for s in range(8)]
  mirrored = [f for f in flipped if not np.array_equal(f["image"], ex["image"])]
  assert mirrored and len(mirrored) < 8
  f = mirrored[0]
  np.testing.assert_array_equal(f["image"], ex["image"][:, ::-1])
  np.testing.assert_allclose(_dot(f["image"], "red"), f["landmarks"][30], atol=TOL)
  # the eye corner 36 is now the face's other eye corner, point 45
  np.testing.assert_allclose(_dot(f["image"], "blue"), f["landmarks"][45], atol=TOL)
  jitter = pipeline.Augment(flip=True, scale_jitter=0.15, translate_jitter=0.08,
                            rotate_jitter=10.0, colour_jitter=0.2)
  for s in range(4):
    j = jitter.random_map(ex, np.random.default_rng(100 + s))
    assert j["image"].dtype == np.uint8 and j["image"].shape == ex["image"].shape
    assert not np.array_equal(j["image"], ex["image"])
    np.testing.assert_allclose(_dot(j["image"], "red"), j["landmarks"][30], atol=TOL)


def _bicubic_enlarged(image, scale, offset):
  """float64 reference: output pixel u samples input (u + 0.5) / scale - 0.5 + offset with Keys'
  cubic (a = -0.75, OpenCV's), borders reflected without repeating the edge (reflect-101)."""
  def axis_weights(n, off):  # [n, n]: output index -> weights of the input taps
    a, w = -0.75, np.zeros((n, n))
    for u in range(n):
      x = (u + 0.5) / scale - 0.5 + off
      for i in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3):
        d = abs(x - i)
        k = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else (((d - 5) * d + 8) * d - 4) * a
        j = abs(i) if i < 0 else (2 * (n - 1) - i if i > n - 1 else i)
        w[u, j] += k
    return w
  wx, wy = axis_weights(image.shape[1], offset[0]), axis_weights(image.shape[0], offset[1])
  return np.einsum("uy,yxc,vx->uvc", wy, image.astype(np.float64), wx)


def test_augment_enlarges_a_random_square_as_a_plain_bicubic_reference_does():
  size = 48
  yy, xx = np.mgrid[:size, :size]
  smooth = np.stack([128 + 100 * np.sin(2 * np.pi * xx / 24 + c) * np.cos(2 * np.pi * yy / 30 + c)
                     for c in (0.0, 1.0, 2.0)], -1).round().astype(np.uint8)
  enlarge = pipeline.Augment(flip=False, scale_jitter=0, translate_jitter=0, colour_jitter=0,
                             enlarge_prob=1.0, enlarge_max=2.0)
  scales = []
  for seed in range(4):
    out = enlarge.random_map({"image": smooth}, np.random.default_rng(seed))["image"]
    rng = np.random.default_rng(seed)
    rng.uniform()  # enlarged or not
    scale, where = rng.uniform(1.0, 2.0), rng.uniform(0, 1, 2)
    ref = _bicubic_enlarged(smooth, scale, where * (size - size / scale))
    # OpenCV quantises positions to 1/32 px and weights to 11 bits, then rounds: ~1 grey level
    # here (a 1/4 px slip of the pixel-centre convention costs ~8)
    assert out.dtype == np.uint8 and np.abs(out - ref).max() <= 1.5, (seed, scale)
    scales.append(scale)
  assert 1.0 < min(scales) and max(scales) < 2.0
  # a share of the examples, the others untouched; none with enlarge_prob=0
  def changed(prob):
    aug = dataclasses.replace(enlarge, enlarge_prob=prob)
    return sum(not np.array_equal(aug.random_map({"image": smooth}, np.random.default_rng(s))[
        "image"], smooth) for s in range(200))
  assert changed(0.0) == 0 and 40 <= changed(0.3) <= 80
  cfg = config_lib.base_config(model="deblurgan").dataset
  cfg.enlarge_max = 0.5
  with pytest.raises(ValueError, match="enlarge_max >= 1, got 0.0 and 0.5"):
    pipeline.augment_from_config(cfg)


def test_augment_enlargement_moves_the_landmarks_with_the_image(images_cfg):
  src = pipeline.data_source(images_cfg, "train")
  ex = next(pipeline.Decode().map(src[i]) for i in range(len(src)) if src[i]["has_landmarks"])
  enlarge = pipeline.Augment(flip=False, scale_jitter=0, translate_jitter=0, colour_jitter=0,
                             enlarge_prob=1.0, enlarge_max=1.4)
  checked = 0
  for s in range(8):
    e = enlarge.random_map(ex, np.random.default_rng(s))
    inside = [(k, c) for k, c in ((30, "red"), (36, "blue"))
              if np.all((e["landmarks"][k] > 4) & (e["landmarks"][k] < SIZE - 5))]
    for k, colour in inside:
      np.testing.assert_allclose(_dot(e["image"], colour), e["landmarks"][k], atol=TOL)
      checked += 1
  assert checked >= 8


def test_train_batches_resume_and_processes_cover_the_dataset(images_cfg):
  ds = pipeline.train_dataset(images_cfg, seed=1, local_batch_size=2)
  b = ds[3]
  assert b["image"].shape == (2, SIZE, SIZE, 3) and b["landmarks"].shape == (2, 68, 2)
  np.testing.assert_array_equal(b["image"], ds[3]["image"])
  it = pipeline.iterate(ds, 0, images_cfg)
  next(it), next(it)
  third = next(it)["image"]
  # resuming at batch 2 reads what the uninterrupted iterator read third
  np.testing.assert_array_equal(next(pipeline.iterate(ds, 2, images_cfg))["image"], third)
  # P processes: over one epoch the shards are disjoint and together hold every example once
  src = pipeline.data_source(images_cfg, "train")
  stored = {common.decode(src[i]["image"]).tobytes(): i for i in range(len(src))}
  n = len(src)
  for p_count in (2, 3):
    shards = []
    for p in range(p_count):
      d = pipeline.train_dataset(images_cfg, seed=7, local_batch_size=1, process_index=p,
                                 process_count=p_count, augment=False)
      shards.append([stored[d[i]["image"][0].tobytes()] for i in range(len(range(p, n, p_count)))])
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))


# --- face_videos --------------------------------------------------------------------------------

def _path(t):
  return 30 + 3 * t, 5 + t  # window origin in the 256x256 photograph at frame t


def _video_frames(face, points, n=FRAMES):
  for t in range(n):
    ox, oy = _path(t)
    yield t, face[oy:oy + 128, ox:ox + 128], points - [ox, oy]


def _write_video(path, frames, fourcc):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 25, (128, 128))
  assert vw.isOpened()
  for f in frames:
    vw.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
  vw.release()


@pytest.fixture(scope="module")
def videos_cfg(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("face_videos_manual"))
  face, points = _face()
  frames = list(_video_frames(face, points))
  # 300VW layout: lossless video + one .pts per frame, numbered from 1
  _write_video(os.path.join(root, "vw001/vid.avi"), [f for _, f, _ in frames], "FFV1")
  for t, _, pts in frames:
    os.makedirs(os.path.join(root, "vw001/annot"), exist_ok=True)
    faces_crop.write_pts(os.path.join(root, f"vw001/annot/{t + 1:06d}.pts"), pts)
  for t, f, _ in frames:  # frame folder, no annotations (detector)
    _write(os.path.join(root, f"vw002/frames/{t + 1:06d}.png"), f)
  _write_video(os.path.join(root, "vw003/clip.mp4"), [f for _, f, _ in frames], "mp4v")
  for t, f, pts in frames:  # frame folder with .pts beside the frames and a gap (6, 7 missing)
    if t + 1 not in (6, 7):
      _write(os.path.join(root, f"vw004/gappy/{t + 1:06d}.png"), f)
      faces_crop.write_pts(os.path.join(root, f"vw004/gappy/{t + 1:06d}.pts"), pts)
  os.makedirs(os.path.join(root, "vw005"))
  with open(os.path.join(root, "vw005/broken.avi"), "wb") as f:
    f.write(b"RIFF not a video" * 64)
  os.makedirs(os.path.join(root, "vw006"))  # empty
  _write_video(os.path.join(root, "vw007/noface.avi"),
               [np.roll(_noface(128, 128), 2 * t, axis=1) for t in range(6)], "MJPG")
  cfg = _cfg("face_videos", tmp_path_factory.mktemp("face_videos_tfds"), root)
  pipeline.build(cfg)
  return cfg


def test_face_videos_counts_landmarks_and_skips(videos_cfg):
  records = _all(videos_cfg, "train") + _all(videos_cfg, "test")
  by_video = {}
  for r in records:
    by_video.setdefault(_str(r["source"]), []).append(r)
  assert set(by_video) == {"vw001/vid.avi", "vw002/frames", "vw003/clip.mp4", "vw004/gappy"}
  assert len(by_video["vw001/vid.avi"]) == FRAMES and len(by_video["vw004/gappy"]) == FRAMES - 2
  assert len(by_video["vw002/frames"]) >= FRAMES - 1 and len(by_video["vw003/clip.mp4"]) >= 10
  assert [int(r["frame_index"]) for r in by_video["vw001/vid.avi"]] == list(range(FRAMES))
  assert [int(r["frame_index"]) for r in by_video["vw004/gappy"]] == [
      i for i in range(1, FRAMES + 1) if i not in (6, 7)]
  for r in records:
    assert common.decode(r["image"]).shape == (SIZE, SIZE, 3)
    annotated = _str(r["source"]) in ("vw001/vid.avi", "vw004/gappy")
    assert bool(r["has_landmarks"]) == annotated
    if annotated:  # the landmark sits on its dot in every frame's crop
      image = common.decode(r["image"])
      np.testing.assert_allclose(_dot(image, "red"), r["landmarks"][30], atol=TOL)
      np.testing.assert_allclose(_dot(image, "blue"), r["landmarks"][36], atol=TOL)
    else:  # detector box inside the crop
      x, y, w, h = r["box"]
      assert w > SIZE / 2 and -1 <= x and x + w <= SIZE + 1
  report = pipeline.build_report(videos_cfg)
  reasons = {s["path"]: s["reason"] for s in report["skipped"]}
  assert reasons == {"vw005/broken.avi": "unreadable video", "vw006": "empty folder",
                     "vw007/noface.avi": "no face detected in any frame"}


def test_face_videos_split_by_video(videos_cfg):
  train, test = _all(videos_cfg, "train"), _all(videos_cfg, "test")
  key = lambda xs: {_str(x["identity"]) for x in xs}
  assert train and test and not key(train) & key(test)
  assert not {_str(x["source"]) for x in train} & {_str(x["source"]) for x in test}


def test_clips_are_consecutive_frames_of_one_video(videos_cfg):
  length = 4
  total = 0
  for split in ("train", "test"):
    src = pipeline.data_source(videos_cfg, split)
    segs = pipeline.segments(videos_cfg, split)
    assert segs[:, 1].sum() == len(src)
    clips = pipeline.ClipSource(src, segs, length)
    assert len(clips) == np.maximum(segs[:, 1] - length + 1, 0).sum()
    for k in range(len(clips)):
      frames = clips[k]["frames"]
      assert len({_str(f["source"]) for f in frames}) == 1
      idx = [int(f["frame_index"]) for f in frames]
      assert idx == list(range(idx[0], idx[0] + length))
    total += len(clips)
  # vw001: 12 frames -> 9 clips; vw004: runs 1-5 and 8-12 -> 2 + 2 clips
  assert total >= 9 + 4 + 2 * 7
  # the crop window moves slowly (temporal smoothing): the face's own motion stays in the clip
  vw1 = [r for s in ("train", "test") for r in _all(videos_cfg, s)
         if _str(r["source"]) == "vw001/vid.avi"]
  nose = np.array([r["landmarks"][30] for r in vw1])
  assert np.abs(np.diff(nose[:, 0])).mean() > 1.0


def test_clip_batches(videos_cfg):
  cfg = copy.deepcopy(videos_cfg)
  cfg.clip_length = 4
  split = max(("train", "test"), key=lambda s: len(pipeline.data_source(cfg, s)))
  ds = pipeline.train_dataset(cfg, seed=0, local_batch_size=3, split=split)
  b = ds[1]
  assert b["frames"].shape == (3, 4, SIZE, SIZE, 3) and b["frames"].dtype == np.uint8
  # `image` is the middle frame (T - 1) // 2, the frame degrade() blurs towards: 1 of 4
  np.testing.assert_array_equal(b["image"], b["frames"][:, 1])
  assert b["landmarks"].shape == (3, 4, 68, 2) and b["box"].shape == (3, 4, 4)
  np.testing.assert_array_equal(b["frames"], ds[1]["frames"])
  cfg.clip_length = 100
  with pytest.raises(ValueError, match="consecutive frames"):
    pipeline.train_dataset(cfg, seed=0, local_batch_size=3, split=split)
