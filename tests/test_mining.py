"""Video mining (the 2017 paper's Sec. 4) on small generated videos of a real face photograph."""
import json
import os

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fdeblur import config_lib
from input_pipeline import mining, pipeline

N = 14


def _photo():
  return cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def _write(path, frames, fourcc="MJPG"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  h, w = frames[0].shape[:2]
  vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 25, (w, h))
  assert vw.isOpened()
  for f in frames:
    vw.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
  vw.release()


def _window(photo, ox, oy):
  return photo[oy:oy + 128, ox:ox + 128]


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
  videos = str(tmp_path_factory.mktemp("videos"))
  out = str(tmp_path_factory.mktemp("mined"))
  photo = _photo()
  # the face moves 3 px right and 1 px down per frame (the camera pans the other way)
  _write(os.path.join(videos, "moving.avi"),
         [_window(photo, 60 - 3 * t, 20 - t) for t in range(N)])
  # frames folder, moving the other way
  for t in range(N):
    os.makedirs(os.path.join(videos, "folder"), exist_ok=True)
    cv2.imwrite(os.path.join(videos, "folder", f"{t:04d}.png"),
                cv2.cvtColor(_window(photo, 30 + 2 * t, 5 + t), cv2.COLOR_RGB2BGR))
  _write(os.path.join(videos, "static.avi"), [_window(photo, 45, 12)] * N)
  yy, xx = np.mgrid[:128, :128]
  texture = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)
  _write(os.path.join(videos, "noface.avi"), [np.roll(texture, 3 * t, 1) for t in range(N)])
  # a face for three frames, then the camera cuts to something else: tracker and detector
  # disagree in most frames
  coffee = cv2.resize(skdata.coffee(), (128, 128), interpolation=cv2.INTER_AREA)
  _write(os.path.join(videos, "cut.avi"),
         [_window(photo, 45 - t, 12) if t < 3 else np.roll(coffee, 2 * t, 1) for t in range(N)])
  with open(os.path.join(videos, "broken.mp4"), "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 20)
  cfg = mining.MiningConfig(min_clip_frames=6, landmarker="none")
  report = mining.mine(videos, out, cfg, progress=False)
  return videos, out, report


def test_mining_accepts_moving_faces_and_rejects_the_rest_with_reasons(mined):
  _, out, report = mined
  status = {e["video"]: e for e in report["videos"]}
  assert set(status) == {"moving.avi", "folder", "static.avi", "noface.avi", "cut.avi",
                         "broken.mp4"}
  for name in ("moving.avi", "folder"):
    assert status[name]["status"] == "accepted", status[name]
    assert status[name]["iou_fraction"] >= 0.5
    assert status[name]["accepted_frames"] >= N - 2
    assert 1.5 < status[name]["mean_motion"] < 5.0  # 3.2 and 2.2 px/frame by construction
  reasons = {k: v["reason"] for k, v in status.items() if v["status"] == "rejected"}
  assert reasons["static.avi"].startswith("static face")
  assert reasons["noface.avi"] == "no face detected in the first frame"
  assert reasons["cut.avi"].startswith("detector/tracker IoU")
  assert reasons["broken.mp4"] == "unreadable video"
  assert report["accepted"] == 2 and report["rejected"] == 4
  with open(os.path.join(out, "mining_report.json")) as f:
    assert json.load(f)["reasons"] == report["reasons"]
  assert "REJECT static.avi" in open(os.path.join(out, "mining_report.txt")).read()


def test_mined_clips_follow_the_face_and_build_as_face_videos(mined, tmp_path):
  _, out, report = mined
  clip = os.path.join(out, "moving", "clip_000")
  names = sorted(f for f in os.listdir(clip) if f.endswith(".png"))
  boxes = json.load(open(os.path.join(clip, "boxes.json")))
  assert sorted(boxes) == names and len(names) >= 6
  # the tracked box follows the known path: +3 px in x, +1 px in y per frame
  numbers = [int(n[:-4]) for n in names]
  assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
  xy = np.array([boxes[n][:2] for n in names])
  slope = np.polyfit(numbers, xy, 1)[0]
  np.testing.assert_allclose(slope, [3.0, 1.0], atol=0.6)
  cfg = config_lib.dataset_config(name="face_videos", data_dir=str(tmp_path), manual_dir=out,
                                  image_size=32, test_fraction=0.5)
  pipeline.build(cfg)
  total = sum(len(pipeline.data_source(cfg, s)) for s in ("train", "test"))
  assert total == report["accepted_frames"]
  assert not pipeline.build_report(cfg)["skipped"]
  videos = {s: {str(pipeline.data_source(cfg, s)[i]["identity"])
                for i in range(len(pipeline.data_source(cfg, s)))} for s in ("train", "test")}
  assert not videos["train"] & videos["test"]


def test_face_classifier_separates_faces_from_background():
  clf = mining.face_classifier()
  photo = skdata.astronaut()
  assert clf.score(photo, (177, 67, 93, 93)) > 0  # the face
  for box in [(300, 300, 93, 93), (380, 100, 93, 93), (10, 10, 90, 90)]:
    assert clf.score(photo, box) < 0


def test_landmarker_is_pluggable(mined, tmp_path):
  videos, _, _ = mined
  calls = []

  def fake(frame, box):  # a "landmarker" that puts 68 points on the box
    calls.append(box)
    x, y, w, h = box
    return np.stack([np.linspace(x + 0.2 * w, x + 0.8 * w, 68),
                     np.linspace(y + 0.3 * h, y + 0.9 * h, 68)], -1).astype(np.float32)

  only = tmp_path / "only"
  only.mkdir()
  os.link(os.path.join(videos, "moving.avi"), only / "moving.avi")
  report = mining.mine(str(only), str(tmp_path / "out"),
                       mining.MiningConfig(min_clip_frames=6), landmarker=fake, progress=False)
  assert report["accepted"] == 1 and calls
  annot = tmp_path / "out" / "moving" / "clip_000" / "annot"
  pts = sorted(os.listdir(annot))
  assert len(pts) == report["accepted_frames"]
  from input_pipeline import faces_crop
  assert faces_crop.read_pts(str(annot / pts[0])).shape == (68, 2)
