"""The deblur command: two faces round trip, untouched background, bad inputs, refused outputs."""
import copy
import json
import math
import os

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fdeblur import deblur, faces


@pytest.fixture
def workdir(trained_tiny):
  return trained_tiny[1]


def _two_faces():
  face = skdata.astronaut()[0:300, 90:390]  # Eileen Collins' face with context
  return np.concatenate([face, face[:, ::-1]], axis=1)  # 300 x 600, two faces


def _write(path, rgb):
  cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_feather_mask_and_paste_back_leave_the_outside_alone():
  m = faces.feather_mask(20, 0.2)
  assert m[0].max() == 0 and m[:, 0].max() == 0 and m[10, 10] == 1.0 and m.shape == (20, 20)
  image = np.random.default_rng(0).integers(0, 256, (50, 60, 3)).astype(np.uint8)
  crop, mat = faces.crop_face(image, (20, 10, 20, 20), 1.5, 16)
  out = faces.paste_back(image, np.zeros((16, 16, 3), np.float32), mat, 0.2)
  region = faces.pasted_region(image.shape, mat, 16, 0.2)
  assert region.any() and not region.all()
  np.testing.assert_array_equal(out[~region], image[~region])
  assert (out[region].astype(int) <= image[region].astype(int)).all()  # blended towards black
  # Pasting the crop itself back changes the image very little.
  same = faces.paste_back(image, crop, mat, 0.2)
  assert np.abs(same.astype(int) - image.astype(int))[region].mean() < 40
  # Residual paste: an unchanged crop changes nothing; a brighter crop brightens the inside only.
  np.testing.assert_array_equal(faces.paste_back(image, crop, mat, 0.2, source_crop=crop), image)
  brighter = faces.paste_back(image, np.clip(crop / 255.0 + 0.1, 0, 1), mat, 0.2, source_crop=crop)
  np.testing.assert_array_equal(brighter[~region], image[~region])
  assert (brighter.astype(int) >= image.astype(int)).all() and (brighter > image).any()


def test_tiles_cover_the_picture_and_blend_to_the_field_they_carry():
  assert deblur.tile_origins(32, 32) == [0]
  assert deblur.tile_origins(300, 152) == [0, 74, 148]  # overlaps >= a quarter tile
  for length, tile in ((33, 32), (160, 32), (1000, 152)):
    o = deblur.tile_origins(length, tile)
    assert o[0] == 0 and o[-1] + tile == length
    assert all(0 < b - a <= tile - tile // 4 for a, b in zip(o, o[1:]))
  # Tiles holding crops of one smooth field blend back to exactly that field, seams included;
  # a tile of a different field moves only the pixels it covers, weighted by position.
  h, w = 70, 90
  field = np.random.default_rng(0).normal(size=(h, w, 3)).astype(np.float32)
  origins = [(y, x) for y in deblur.tile_origins(h, 32) for x in deblur.tile_origins(w, 32)]
  deltas = [field[y:y + 32, x:x + 32] for y, x in origins]
  np.testing.assert_allclose(deblur.blend_tiles((h, w), origins, deltas), field, atol=1e-5)
  ones = [np.ones((32, 32, 1), np.float32) * (k == 0) for k in range(len(origins))]
  mixed = deblur.blend_tiles((h, w), origins, ones)[..., 0]
  assert mixed[0, 0] == 1.0 and mixed[-1, -1] == 0.0 and 0 < mixed[20, 28] < 1


def test_two_faces_round_trip_and_bad_inputs(workdir, tmp_path, monkeypatch):
  src = tmp_path / "in"
  src.mkdir()
  image = _two_faces()
  _write(src / "two.png", image)
  _write(src / "noface.png", np.full((120, 160, 3), 128, np.uint8))
  _write(src / "thin.png", np.full((2, 300, 3), 90, np.uint8))  # dlib's CNN raised on it
  (src / "broken.jpg").write_bytes(b"not a jpeg")
  _write(src / "explodes.png", np.full((40, 40, 3), 20, np.uint8))
  real = deblur.process_image

  def process_image(d, job, *a, **k):  # an unforeseen library error on one picture
    if job.path.endswith("explodes.png"):
      raise RuntimeError("Error detected in\n dlib")
    return real(d, job, *a, **k)

  monkeypatch.setattr(deblur, "process_image", process_image)
  out = tmp_path / "out"
  rc = deblur.main(["--checkpoint", workdir, str(src / "two.png"), str(src / "noface.png"),
                    str(src / "thin.png"), str(src / "broken.jpg"), str(src / "explodes.png"),
                    str(tmp_path / "missing.png"), "--out", str(out), "--quiet", "--paste",
                    "replace"])
  assert rc == 0
  summary = json.load(open(out / "deblur_summary.json"))
  assert set(summary["skipped"]) == {str(src / "broken.jpg"), str(tmp_path / "missing.png"),
                                     str(src / "explodes.png")}
  assert "readable" in summary["skipped"][str(src / "broken.jpg")]
  assert summary["skipped"][str(src / "explodes.png")] == "RuntimeError: Error detected in dlib"
  assert "no face found" in summary["outputs"][str(out / "thin.png")]["whole_picture"]
  assert cv2.imread(str(out / "thin.png")).shape == (2, 300, 3)
  # No face: the whole picture is deblurred (tiles of a face crop's size: 32 px here).
  whole = summary["outputs"][str(out / "noface.png")]
  assert whole["faces"] == [] and "no face found" in whole["whole_picture"]
  assert "in 35 tile(s)" in whole["whole_picture"]  # 120 x 160: 5 x 7 tiles of 32 px, step 24
  assert cv2.imread(str(out / "noface.png")).shape == (120, 160, 3)
  out_skip = tmp_path / "out_skip"
  assert deblur.main(["--checkpoint", workdir, str(src / "noface.png"), "--out", str(out_skip),
                      "--quiet", "--no_face", "skip"]) == 1
  skipped = json.load(open(out_skip / "deblur_summary.json"))["skipped"]
  assert "no face" in skipped[str(src / "noface.png")] and not (out_skip / "noface.png").exists()
  result = cv2.cvtColor(cv2.imread(str(out / "two.png")), cv2.COLOR_BGR2RGB)
  assert result.shape == image.shape
  found = summary["outputs"][str(out / "two.png")]["faces"]
  assert summary["outputs"][str(out / "two.png")]["detector"] == "haar"  # no fallback needed
  assert len(found) >= 2
  centres = sorted(f["box"][0] + f["box"][2] / 2 for f in found)
  assert centres[0] < 300 < centres[-1]  # one face in each half
  size = 32  # the tiny config's image_size: crops are 32 x 32
  region = np.zeros(image.shape[:2], bool)
  for f in found:
    region |= faces.pasted_region(image.shape, np.array(f["matrix"]), size, 0.15)
  assert region.mean() < 0.8
  np.testing.assert_array_equal(result[~region], image[~region])  # outside: bit-exact
  assert not np.array_equal(result[region], image[region])  # the faces went through the model
  assert (src / "two.png").exists() and np.array_equal(
      cv2.cvtColor(cv2.imread(str(src / "two.png")), cv2.COLOR_BGR2RGB), image)


def test_faces_only_folder_and_video(workdir, tmp_path):
  src = tmp_path / "folder"
  src.mkdir()
  image = _two_faces()
  _write(src / "a.png", image)
  video = src / "clip.avi"
  w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (600, 300))
  for t in range(3):
    w.write(cv2.cvtColor(np.roll(image, 2 * t, axis=1), cv2.COLOR_RGB2BGR))
  w.release()
  out = tmp_path / "crops"
  assert deblur.main(["--checkpoint", workdir, str(src), "--out", str(out), "--faces_only",
                      "--quiet"]) == 0
  crops = sorted(os.listdir(out / "folder" / "a_faces"))
  assert len(crops) >= 2 and cv2.imread(str(out / "folder" / "a_faces" / crops[0])).shape == (32, 32, 3)
  assert len(os.listdir(out / "folder" / "clip_faces")) >= 3
  out2 = tmp_path / "video_out"
  assert deblur.main(["--checkpoint", workdir, str(video), "--out", str(out2), "--quiet"]) == 0
  cap = cv2.VideoCapture(str(out2 / "clip.mp4"))
  n = 0
  while cap.read()[0]:
    n += 1
  assert n == 3


def test_output_equal_to_input_is_refused(workdir, tmp_path, capsys):
  src = tmp_path / "in"
  src.mkdir()
  _write(src / "x.png", _two_faces())
  before = (src / "x.png").read_bytes()
  # --out is the input folder: the output would be the input file itself.
  assert deblur.main(["--checkpoint", workdir, str(src / "x.png"), "--out", str(src)]) == 2
  assert "overwrite" in capsys.readouterr().err
  assert deblur.main(["--checkpoint", workdir, str(src), "--out", str(src)]) == 2
  assert "is one of the inputs" in capsys.readouterr().err
  assert (src / "x.png").read_bytes() == before


def test_flags_are_absl_flags_with_clear_errors(capsys):
  assert deblur.main(["--help"]) == 0
  assert "--faces_only" in capsys.readouterr().out
  assert deblur.main(["--checkpoint=w", "a.png"]) == 2  # no --checkpoint: the shipped model
  assert "--out required" in capsys.readouterr().err
  assert deblur.main(["--checkpoint=w", "--out=x", "--pastee=replace", "a.png"]) == 2
  assert "pastee" in capsys.readouterr().err
  assert deblur.main(["--checkpoint=w", "--out=x", "--paste=glue", "a.png"]) == 2
  assert "residual" in capsys.readouterr().err  # the enum's choices are named


def test_scales_set_the_crop_size_and_mixed_sizes_run_apart(workdir, tmp_path):
  # quickstart:tiny: 32 px crops of margin 1.6 x the face box -> its faces are 20 px.
  d = deblur.Deblurrer(workdir)
  assert d.scale == "train" and d.face_size == pytest.approx(32 / 1.6)
  box = (10.0, 10.0, 100.0, 90.0)
  assert d.crop_size(box) == 32  # the training scale of a face-crop model: its image size
  d.scale = "native"
  assert d.crop_size(box) == 160  # 1.6 x 100 px, a multiple of 4 (the generator's stride)
  d.scale, d.face_size = "train", 49.0
  assert d.crop_size(box) == 80  # 1.6 x 49 = 78.4 -> 80
  # A small face is enlarged at most config.eval.max_enlarge times
  assert d.max_enlarge == math.inf  # quickstart sets no limit
  limited = copy.deepcopy(d.config)
  limited.eval.max_enlarge = 2.0
  d.max_enlarge = deblur.model_max_enlarge(limited)
  assert d.max_enlarge == 2.0
  assert d.crop_size((0, 0, 15, 12)) == 48  # 1.6 x 2 x 15 = 48, not 1.6 x 49
  assert d.crop_size((0, 0, 30, 30)) == 80 and d.crop_size(box) == 80  # 2 x 30 > 49: face_size
  with pytest.raises(deblur.UsageError, match="--max_enlarge=0.5"):
    deblur.Deblurrer(workdir, max_enlarge=0.5)
  limited.eval.max_enlarge = 0.5
  with pytest.raises(deblur.UsageError, match="config.eval.max_enlarge=0.5"):
    deblur.model_max_enlarge(limited)
  d.scale = "squeeze"
  assert d.crop_size((0, 0, 400, 400)) == 32
  rng = np.random.default_rng(0)
  crops = [rng.integers(0, 256, (n, n, 3)).astype(np.uint8) for n in (32, 48, 32)]
  outs = d.run(crops)
  assert [o.shape for o in outs] == [(32, 32, 3), (48, 48, 3), (32, 32, 3)]
  np.testing.assert_allclose(d.run(crops[1:2])[0], outs[1], atol=1e-6)  # not mixed up
  np.testing.assert_allclose(d.run(crops[2:])[0], outs[2], atol=1e-6)
  # The command: --scale native deblurs the faces at the photo's resolution, outside untouched.
  src = tmp_path / "in"
  src.mkdir()
  image = _two_faces()
  _write(src / "two.png", image)
  out = tmp_path / "out"
  assert deblur.main(["--checkpoint", workdir, str(src / "two.png"), "--out", str(out), "--quiet",
                      "--scale", "native"]) == 0
  found = json.load(open(out / "deblur_summary.json"))["outputs"][str(out / "two.png")]["faces"]
  result = cv2.cvtColor(cv2.imread(str(out / "two.png")), cv2.COLOR_BGR2RGB)
  d.scale = "native"
  region = np.zeros(image.shape[:2], bool)
  for f in found:
    mat = np.array(f["matrix"])
    assert mat[0, 0] == pytest.approx(1.0, rel=0.05)  # crop pixels = photo pixels
    region |= faces.pasted_region(image.shape, mat, d.crop_size(f["box"]), 0.15)
  np.testing.assert_array_equal(result[~region], image[~region])
  assert not np.array_equal(result[region], image[region])
  with pytest.raises(deblur.UsageError, match="--scale"):
    deblur.Deblurrer(workdir, scale="wrong")


def test_self_ensemble_averages_the_transformed_back_outputs(workdir):
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(2, 8, 12, 3))
  for k in range(8):  # each transform is undone by its inverse, and they are all different
    np.testing.assert_array_equal(deblur.dihedral(deblur.dihedral(x, k), k, inverse=True), x)
  assert len({deblur.dihedral(x, k).tobytes() for k in range(8)}) == 8
  np.testing.assert_array_equal(deblur.dihedral(x, 4), x[:, :, ::-1])  # 2: the left-right flip
  np.testing.assert_array_equal(deblur.dihedral(x, 1), np.rot90(x, 1, axes=(1, 2)))
  crops = [rng.integers(0, 256, (32, 48, 3)).astype(np.uint8) for _ in range(2)]
  single = deblur.Deblurrer(workdir)
  inputs = np.stack(crops).astype(np.float32) / 255.0
  for n, ks in ((2, (0, 4)), (8, range(8))):
    want = np.mean([deblur.dihedral(single.predict(np.ascontiguousarray(
        deblur.dihedral(inputs, k))), k, inverse=True) for k in ks], axis=0)
    got = deblur.Deblurrer(workdir, ensemble=n).run(crops)
    np.testing.assert_allclose(np.stack(got), np.clip(want, 0, 1), atol=1e-6)
    assert not np.allclose(np.stack(got), np.stack(single.run(crops)), atol=1e-4)
  with pytest.raises(deblur.UsageError, match="--ensemble=3"):
    deblur.Deblurrer(workdir, ensemble=3)


def test_dlib_boxes_map_to_the_haar_convention():
  """faces.to_haar_box is the inverse of what benchmarks/detector_boxes.py measures, and a hand
  case: side x ratio about the centre shifted by (dx, dy) x the side."""
  from benchmarks import detector_boxes
  box = (40.0, 30.0, 100.0, 100.0)
  assert faces.to_haar_box(box, "haar") == box
  ratio, dx, dy = faces.TO_HAAR["cnn"]
  x, y, w, h = faces.to_haar_box(box, "cnn")
  assert (w, h) == pytest.approx((100 * ratio, 100 * ratio))
  assert (x + w / 2, y + h / 2) == pytest.approx((90 + 100 * dx, 80 + 100 * dy))
  for method in ("hog", "cnn"):
    assert detector_boxes.relation(faces.to_haar_box(box, method), box) == pytest.approx(
        faces.TO_HAAR[method])
  pairs = detector_boxes.pairs([(0, 0, 10, 10), (100, 0, 10, 10)],
                               [(101, 1, 10, 10), (50, 50, 9, 9)])
  assert pairs == [((100, 0, 10, 10), (101, 1, 10, 10))]  # far boxes stay unpaired


def test_cnn_fallback_finds_what_haar_misses(monkeypatch):
  """--detector=auto: dlib's CNN runs on a rescaled copy only where Haar finds nothing; its
  boxes come back in the photo's pixels and in the Haar convention."""
  face = skdata.astronaut()[0:300, 90:390]
  (box, conf), = faces.detect_cnn_rescaled(face)[0]
  (big_box, _), = faces.detect_cnn_rescaled(cv2.resize(face, None, fx=2, fy=2))[0]
  np.testing.assert_allclose(np.array(big_box) / 2, box, atol=4)  # same face, same pixels
  haar_box = faces.detect_checked(face, "haar")[0][0][0]
  found, _, method = faces.find_faces(face, "haar", fallback=True)
  assert method == "haar" and found[0][0] == haar_box  # Haar found it: no fallback
  real = faces.detect_checked
  monkeypatch.setattr(faces, "detect_checked", lambda image, method="haar", *a, **k: (
      ([], [((1, 2, 3, 4), "no eye found")]) if method == "haar" else real(image, method, *a, **k)))
  assert faces.find_faces(face, "haar")[0] == []
  found, rejected, method = faces.find_faces(face, "haar", fallback=True)
  assert method == "cnn" and rejected == [((1, 2, 3, 4), "no eye found")]
  assert found == [(pytest.approx(faces.to_haar_box(box, "cnn")), conf)]
  x, y, w, h = found[0][0]  # on the face Haar finds, at its scale
  assert abs(w / haar_box[2] - 1) < 0.2
  assert abs(x + w / 2 - haar_box[0] - haar_box[2] / 2) < 0.1 * w


def test_auto_detector_falls_back_on_pictures_not_video_frames(workdir, monkeypatch):
  calls = []
  monkeypatch.setattr(faces, "detect_cnn_rescaled",
                      lambda image, check=True: calls.append(image.shape) or ([], []))
  gray = np.full((120, 160, 3), 128, np.uint8)  # no face for any detector
  d = deblur.Deblurrer(workdir)
  assert d.detector == "auto" and d.fallback  # the test extra installs dlib
  assert d.crops(gray, fallback=False) == [] and calls == []  # a video frame: cascades only
  assert d.crops(gray) == [] and calls == [(120, 160, 3)] and d.found_by == "cnn"
  assert deblur.Deblurrer(workdir, detector="haar").crops(gray) == [] and len(calls) == 1
  with pytest.raises(deblur.UsageError, match="--detector=dnn"):
    deblur.Deblurrer(workdir, detector="dnn")
