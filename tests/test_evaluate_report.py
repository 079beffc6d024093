"""--mode=evaluate: protocols x rows (model, blurred, oracle), report tables and plots."""
import copy
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from fdeblur import config_lib, evaluate, face_analysis, faces, inference, protocols
from fdeblur import state as state_lib


def _png_ok(path):
  with Image.open(path) as im:
    im.load()
    assert im.size[0] > 50 and im.size[1] > 50


@pytest.fixture
def trained(trained_tiny):
  cfg, workdir = trained_tiny
  return copy.deepcopy(cfg), workdir  # tests change their config


def test_report_protocols_oracle_and_plots(trained):
  cfg, workdir = trained
  cfg.eval.protocols = "gaussian,motion"
  results = evaluate.evaluate(cfg, workdir)
  assert list(results["protocols"]) == ["gaussian", "motion"]
  for name, p in results["protocols"].items():
    oracle = p["rows"]["oracle"]
    assert np.isinf(oracle["psnr"]) and oracle["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(p["rows"]["blurred"]["psnr"]) and np.isfinite(p["rows"]["model"]["psnr"])
    if results["faces"]:  # the oracle is the ground truth's own image: perfect
      assert oracle["landmark_auc"] == pytest.approx(1.0) and oracle["landmark_failure"] == 0.0
      assert oracle["identity"] == pytest.approx(1.0, abs=1e-5)
      assert 0.0 <= p["rows"]["blurred"]["landmark_auc"] <= 1.0
      assert -1.0 <= p["rows"]["model"]["identity"] <= 1.0
  # The protocols differ, and each is reproducible (fixed seed).
  g, m = results["protocols"]["gaussian"]["rows"], results["protocols"]["motion"]["rows"]
  assert g["blurred"]["psnr"] != m["blurred"]["psnr"]
  assert results["mean"]["blurred"]["psnr"] == g["blurred"]["psnr"]
  report = open(os.path.join(workdir, "report.md")).read()
  for name in ("gaussian", "motion"):
    assert f"| {name} | oracle (sharp) | ∞ | 1.0000 |" in report
    assert f"| {name} | blurred input | {results['protocols'][name]['rows']['blurred']['psnr']:.2f} |" in report
    assert f"| {name} | {cfg.model.name} | " in report
    assert f"## {name}:" in report
  assert "| oracle (sharp) | ∞ | 1.0000 |" in report
  saved = json.load(open(os.path.join(workdir, "metrics.json")))
  assert saved["protocols"]["motion"]["rows"]["blurred"]["psnr"] == pytest.approx(
      m["blurred"]["psnr"])
  _png_ok(os.path.join(workdir, "samples.png"))
  _png_ok(os.path.join(workdir, "samples_motion.png"))
  if results["faces"]:
    for name in ("gaussian", "motion"):
      _png_ok(os.path.join(workdir, f"ced_{name}.png"))
      _png_ok(os.path.join(workdir, f"identity_{name}.png"))
    assert "landmark AUC@0.08" in report


def test_without_face_metrics_the_report_says_how_to_get_them(trained, tmp_path):
  cfg, workdir = trained
  cfg.eval.protocols = "training"
  cfg.eval.faces = "none"
  out = str(tmp_path / "copy")
  shutil.copytree(workdir, out)
  results = evaluate.evaluate(cfg, out)
  assert not results["faces"] and "landmark_auc" not in results["protocols"]["training"]["rows"]["model"]
  report = open(os.path.join(out, "report.md")).read()
  assert "fdeblur[faces]" in report and "| training | oracle (sharp) | ∞ | 1.0000 |" in report


def test_compare_puts_checkpoints_side_by_side(trained, tmp_path):
  cfg, workdir = trained
  cfg.eval.protocols = "gaussian"
  cfg.eval.faces = "none"
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  out = str(tmp_path / "cmp")
  result = evaluate.compare(cfg, [workdir, other], out)
  assert len(result["checkpoints"]) == 2
  a, b = (c["results"]["protocols"]["gaussian"]["rows"]["model"]["psnr"]
          for c in result["checkpoints"])
  assert a == pytest.approx(b)  # the same weights on the same blur
  text = open(os.path.join(out, "compare.md")).read()
  assert f"| {os.path.basename(workdir)} (deblurgan, step 2) |" in text
  assert "| other (deblurgan, step 2) |" in text and "| oracle (sharp) | ∞ |" in text


def test_protocol_names_are_checked(tiny_config):
  tiny_config.eval.protocols = "pravg7"
  with pytest.raises(ValueError, match="clip dataset"):
    protocols.protocols(tiny_config)
  tiny_config.eval.protocols = "nonsense"
  with pytest.raises(ValueError, match="unknown evaluation protocol"):
    protocols.protocols(tiny_config)
  tiny_config.eval.protocols = ""
  assert protocols.protocols(tiny_config)[:3] == ["training", "gaussian", "motion"]
  tiny_config.dataset.clip_length = 9
  tiny_config.blur.pravg_lengths = (7, 9, 11, 15, 21)
  names = protocols.protocols(tiny_config)
  assert "pravg7" in names and "pravg9" in names and "pravg11" not in names and "vla" in names
  blur = protocols.protocol_blur(tiny_config, "pravg9")
  assert blur.pravg_prob == 1.0 and blur.gaussian_prob == 0.0 and tuple(blur.pravg_lengths) == (9,)
  assert tiny_config.blur.gaussian_prob > 0  # the config itself is untouched


def test_pravg_blur_of_clips_is_the_frame_average(tiny_config):
  tiny_config.dataset.clip_length = 7
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, size=(2, 7, 16, 16, 3)).astype(np.uint8)
  blur = protocols.protocol_blur(tiny_config, "pravg7")
  blur.camera_response = "none"
  blurry, sharp = inference.blur_test_clips(tiny_config, {"frames": frames}, blur)
  np.testing.assert_allclose(sharp, frames[:, 3] / 255.0, atol=1e-6)
  np.testing.assert_allclose(blurry, frames.mean(1) / 255.0, atol=1e-4)


@pytest.mark.skipif(not faces.available(), reason="needs the [faces] extra (dlib)")
def test_face_analysis_on_a_real_face_against_numpy():
  import cv2
  from skimage import data as skdata
  crop = skdata.astronaut()[30:270, 100:340]
  img = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)[None]
  an = face_analysis.FaceAnalysis(config_lib.base_config(), {"image": img})
  sharp = img.astype(np.float32) / 255.0
  blurred = cv2.GaussianBlur(sharp[0], (0, 0), 1.5)[None]
  res, res_blur = an.analyse(sharp), an.analyse(blurred)
  assert res["landmarks"].shape == (1, 68, 2) and res["embedding"].shape == (1, 128)
  assert res["detected"][0]  # the astronaut's face is found at 256px
  gt = an.ground_truth(res)  # no annotations: the landmarker on the sharp image
  summary, err, ident = face_analysis.face_rows(res_blur, gt, res["embedding"])
  # The blurred face's points and embedding differ from the sharp one's (nothing compared with
  # itself), and the numbers are the float64 NumPy definitions.
  pts, ref = res_blur["landmarks"][0].astype(np.float64), gt[0]
  diagonal = np.hypot(*(ref.max(0) - ref.min(0)))
  expected = np.linalg.norm(pts - ref, axis=-1).mean() / diagonal
  assert 0 < err[0] < 0.08 and err[0] == pytest.approx(expected, rel=1e-9)
  e, f = res_blur["embedding"][0].astype(np.float64), res["embedding"][0].astype(np.float64)
  cos = e @ f / (np.linalg.norm(e) * np.linalg.norm(f))
  assert 0.5 < ident[0] < 1.0 - 1e-6 and ident[0] == pytest.approx(cos, rel=1e-9)
  assert summary["identity"] == pytest.approx(cos, rel=1e-9)
  assert summary["landmark_error"] == pytest.approx(expected, rel=1e-9)


def test_clip_dataset_pravg_and_vla_protocols(trained, video_data_dir):
  from conftest import load_config
  cfg_q, workdir = trained
  cfg = load_config("chrysos2019")  # tiny: face_videos clips of 5 frames, PrAvg(3), PrAvg(5)
  cfg.dataset.data_dir, cfg.dataset.manual_dir = video_data_dir
  cfg.eval.faces = "none"
  cfg.eval.batch_size = cfg_q.eval.batch_size
  data = evaluate.load_test_data(cfg)
  assert data["clips"]["frames"].shape[1:2] == (cfg.dataset.clip_length,)
  nets, state = state_lib.restore_for_evaluation(cfg_q, workdir)  # any generator: fully conv.
  results, _ = evaluate.evaluate_state(cfg, nets, state, data, False)
  names = list(results["protocols"])
  assert names[:3] == ["training", "gaussian", "motion"] and names[-3:] == ["pravg3", "pravg5", "vla"]
  for p in results["protocols"].values():
    assert np.isinf(p["rows"]["oracle"]["psnr"]) and np.isfinite(p["rows"]["blurred"]["psnr"])
  # Averaging more frames of a moving face blurs more.
  assert (results["protocols"]["pravg5"]["rows"]["blurred"]["psnr"]
          < results["protocols"]["pravg3"]["rows"]["blurred"]["psnr"])


def test_missing_faces_extra_is_explained(monkeypatch, tiny_config):
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
  with pytest.raises(faces.FacesUnavailable, match=r"fdeblur\[faces\]"):
    faces.models_dir()
  assert not faces.available()
  tiny_config.eval.faces = "auto"
  assert not face_analysis.enabled(tiny_config)  # falls back to PSNR/SSIM only
  tiny_config.eval.faces = "dlib"
  faces.load.cache_clear()
  try:
    with pytest.raises(faces.FacesUnavailable, match="face_recognition_models is not installed"):
      face_analysis.enabled(tiny_config)
  finally:
    faces.load.cache_clear()
