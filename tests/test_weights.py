"""Exported weights (fdeblur.weights) and the deblur command's default model."""
import json
import os

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from fdeblur import deblur, errors, weights
from fdeblur.weights import exporter


def _face_photo():
  return skdata.astronaut()[0:300, 90:390]


def test_export_round_trip_matches_the_checkpoint(trained_tiny, tmp_path):
  _, workdir = trained_tiny
  out = tmp_path / "exported"
  info = exporter.export(workdir, str(out))
  assert weights.is_exported(str(out)) and info["step"] == 2
  # only the generator's weights: far smaller than the orbax train state
  assert os.path.getsize(out / weights.PARAMS_FILE) == info["bytes"] < 4 * info["parameters"] + 65536
  d_ckpt = deblur.Deblurrer(workdir)
  d_exp = deblur.Deblurrer(str(out))
  crops = [np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8) for _ in range(3)]
  np.testing.assert_allclose(np.stack(d_exp.run(crops)), np.stack(d_ckpt.run(crops)), atol=1e-6)


def test_default_model_is_used_without_checkpoint(trained_tiny, tmp_path, monkeypatch):
  _, workdir = trained_tiny
  shipped = tmp_path / "shipped"
  exporter.export(workdir, str(shipped))
  monkeypatch.setattr(weights, "DEFAULT", str(shipped))
  src = tmp_path / "photo.png"
  cv2.imwrite(str(src), cv2.cvtColor(_face_photo(), cv2.COLOR_RGB2BGR))
  out = tmp_path / "out"
  assert deblur.main([str(src), f"--out={out}", "--quiet"]) == 0
  assert (out / "photo.png").exists()
  assert json.load(open(out / "deblur_summary.json"))["outputs"]


def test_missing_default_model_is_one_clear_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(weights, "DEFAULT", str(tmp_path / "nowhere"))
  src = tmp_path / "photo.png"
  cv2.imwrite(str(src), cv2.cvtColor(_face_photo(), cv2.COLOR_RGB2BGR))
  assert deblur.main([str(src), f"--out={tmp_path / 'out'}", "--quiet"]) == 4
  err = capsys.readouterr().err
  assert "shipped model is missing" in err and "--checkpoint" in err


def test_weights_that_do_not_fit_their_config_are_refused(trained_tiny, tmp_path):
  _, workdir = trained_tiny
  out = tmp_path / "exported"
  exporter.export(workdir, str(out))
  cfg = json.load(open(out / weights.CONFIG_FILE))
  cfg["model"]["ngf"] = cfg["model"]["ngf"] * 2
  json.dump(cfg, open(out / weights.CONFIG_FILE, "w"))
  with pytest.raises(errors.CheckpointError, match="do not match"):
    weights.load(str(out))


def test_fine_tuning_starts_from_exported_weights(trained_tiny, tmp_path):
  """config.train.init_from: a fresh run's generator (and EMA) are the exported weights; a
  network that does not fit them is refused naming the variable."""
  import jax
  from fdeblur import state as state_lib
  config, workdir = trained_tiny
  out = tmp_path / "exported"
  exporter.export(workdir, str(out))
  _, _, want = weights.load(str(out))
  config = config.copy_and_resolve_references()
  config.train.init_from = str(out)
  config.train.ema_decay = 0.99  # the EMA starts from them too
  start = state_lib.Trainable(config).init_state()
  assert int(start.step) == 0
  for got in (start.params, start.ema_params):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), want.params)
  config.model.ngf *= 2
  with pytest.raises(errors.CheckpointError, match=f"{out}/params/.*shape"):
    state_lib.Trainable(config).init_state()
  config.train.init_from = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere: no params.msgpack"):
    state_lib.Trainable(config).init_state()
  # a resumed run (its checkpoint replaces the state) no longer needs the folder
  assert int(state_lib.Trainable(config).init_state(fine_tune=False).step) == 0
  config.train.init_from, config.train.init_grow = "", True
  with pytest.raises(ValueError, match="init_grow=True needs config.train.init_from"):
    state_lib.Trainable(config).init_state()


def test_a_widened_generator_computes_what_the_narrow_one_did():
  """train.init_grow (weights.widen): the face model's generator at ngf 4 grown to ngf 8 gives
  the same output; the new channels' own fresh weights are kept."""
  import jax
  from conftest import load_config
  from fdeblur import networks
  rng = np.random.default_rng(0)
  config = load_config("face_model")
  config.model.zero_head = False  # a head of zeros would make any two networks agree
  narrow = networks.Networks.generator(config)
  old = jax.tree.map(
      lambda a: (np.asarray(a) + 0.05 * rng.normal(size=np.shape(a))).astype(np.float32),
      narrow.params)
  config.model.ngf = 8
  wide = networks.Networks.generator(config)
  grown = weights._like(wide.params, old, "params", grow=True)  # pylint: disable=protected-access
  x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
  want = np.asarray(narrow.apply_eval(old, narrow.model_state, x))
  np.testing.assert_allclose(np.asarray(wide.apply_eval(grown, wide.model_state, x)), want,
                             atol=2e-5)
  assert not np.allclose(np.asarray(wide.apply_eval(wide.params, wide.model_state, x)), want,
                         atol=1e-3)
  k_new = grown["stem"]["conv"]["kernel"]
  k_init = np.asarray(wide.params["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(k_new[..., :4], old["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(k_new[..., 4:], k_init[..., 4:])  # new features: fresh weights
  k = grown["blocks"][0]["conv1"]["kernel"]
  assert k.shape == (3, 3, 32, 32) and not k[:, :, 16:, :].any()  # new inputs: unconnected
  with pytest.raises(errors.CheckpointError, match="shape"):
    weights._like(wide.params, old, "params")  # pylint: disable=protected-access


def test_shipped_model_loads_and_leaves_a_sharp_face_alone():
  from fdeblur import inference
  config, nets, state = weights.load()  # fdeblur/weights/face_model
  assert config.model.name == "deblurgan" and config.dataset.face_size > 0
  face = skdata.astronaut()[40:200, 140:300].astype(np.float32) / 255.0  # 160 px, sharp
  out = inference.Predictor(nets, state, 1)(face[None])[0]
  assert out.shape == face.shape
  mse = np.mean((np.clip(out, 0, 1) - face) ** 2)
  assert 10 * np.log10(1 / mse) > 35.0  # does (almost) no harm
