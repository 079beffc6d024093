import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from fdeblur import evaluate, inference, networks, parallel, train
from fdeblur import state as state_lib
from input_pipeline import pipeline


def _setup(cfg, devices, tx=None):
  mesh = parallel.make_mesh(devices=devices)
  setup = train.Setup(cfg, mesh, g_tx=tx)
  state = jax.device_put(setup.init_state(), parallel.replicated(mesh))
  return mesh, setup.g, setup.g_tx, state, setup.step


def _batch(cfg, mesh):
  ds = pipeline.train_dataset(cfg.dataset, seed=0, local_batch_size=cfg.train.batch_size)
  return parallel.global_batch(ds[0], mesh)


def test_one_step_on_a_fixed_batch_lowers_the_loss(tiny_config):
  tiny_config.train.learning_rate = 1e-3
  mesh, _, _, state, step = _setup(tiny_config, jax.devices()[:1])
  images = _batch(tiny_config, mesh)
  state1, m0 = step(state, images)
  loss0 = float(m0["loss"])
  # Same step index again -> same blur; only the parameters changed.
  _, m1 = step(state1.replace(step=jnp.zeros_like(state1.step)), images)
  assert float(m1["loss"]) < loss0
  assert int(state1.step) == 1


def test_sharded_step_matches_single_device(tiny_config):
  assert len(jax.devices()) == 8
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    # Plain SGD, so that parameters reflect the gradients linearly: Adam's first steps are
    # lr * sign(g) and would turn round-off in near-zero gradients (conv biases before
    # instance norm) into full-size differences.
    mesh, _, _, state, step = _setup(tiny_config, devices, tx=optax.sgd(0.05))
    images = _batch(tiny_config, mesh)
    losses = []
    for _ in range(2):
      state, m = step(state, images)
      losses.append(float(m["loss"]))
    assert state.params["stem"]["conv"]["kernel"].sharding.is_fully_replicated
    results.append((losses, jax.device_get(state.params)))
  (l1, p1), (l8, p8) = results
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resume_continues_and_matches_an_uninterrupted_run(tiny_config, tmp_path):
  tiny_config.train.num_steps = 4
  tiny_config.train.checkpoint_every = 2
  tiny_config.train.schedule = "constant"  # the "interrupted" run below is a 2-step run
  straight = train.train(tiny_config, str(tmp_path / "straight"))
  tiny_config.train.num_steps = 2
  train.train(tiny_config, str(tmp_path / "split"))
  assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == ["2"]
  tiny_config.train.num_steps = 4
  resumed = train.train(tiny_config, str(tmp_path / "split"))
  assert int(resumed.step) == 4
  assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == ["2", "4"]
  # Resuming is exact: the checkpoint round trip is bit-exact and batch i is a pure function of
  # (seed, i), so the resumed run ends with the very same parameters.
  for a, b in zip(jax.tree.leaves(jax.device_get(straight.params)),
                  jax.tree.leaves(jax.device_get(resumed.params))):
    np.testing.assert_array_equal(a, b)
  assert int(straight.opt_state[0].count) == int(resumed.opt_state[0].count) == 4


def _ssim_numpy(a, b):
  """Wang et al. 2004 SSIM in float64: 11x11 Gaussian window (sigma 1.5), valid region,
  mean over pixels and channels."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  g = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
  g /= g.sum()

  def filt(x):
    out = ndimage.correlate1d(x, g, axis=0, mode="constant")[5:-5]
    return ndimage.correlate1d(out, g, axis=1, mode="constant")[:, 5:-5]

  vals = []
  for c in range(a.shape[-1]):
    x, y = a[..., c], b[..., c]
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) /
                ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
  return float(np.mean(vals))


def test_evaluate_writes_report_matching_numpy(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  # One protocol, no dlib: protocols and face metrics are tested in test_evaluate_report.py.
  tiny_config.eval.protocols = "training"
  tiny_config.eval.faces = "none"
  state = train.train(tiny_config, workdir)
  results = evaluate.evaluate(tiny_config, workdir)  # restores the checkpoint itself
  assert results["step"] == tiny_config.train.num_steps
  for name in ("report.md", "metrics.json", "samples.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "metrics.json")) as f:
    saved = json.load(f)
  data = pipeline.eval_examples(tiny_config.dataset)
  assert saved["num_images"] == len(data["image"])
  # Recompute image 0 from scratch in float64.
  sharp = data["image"][:1].astype(np.float64) / 255.0
  blurry = inference.blur_test_set(tiny_config, data["image"])[:1]
  predict = inference.Predictor(networks.Networks.generator(tiny_config), state, 8)
  out = predict(blurry)
  psnr = lambda x: 10 * np.log10(1.0 / np.mean((x.astype(np.float64) - sharp) ** 2))
  row = saved["per_image"][0]
  np.testing.assert_allclose(row["psnr_blurred"], psnr(blurry), rtol=1e-4)
  np.testing.assert_allclose(row["psnr_deblurred"], psnr(out), rtol=1e-4)
  np.testing.assert_allclose(row["ssim_blurred"], _ssim_numpy(blurry[0], sharp[0]), atol=1e-4)
  np.testing.assert_allclose(row["ssim_deblurred"], _ssim_numpy(out[0], sharp[0]), atol=1e-4)
  mean_in = np.mean([r["psnr_blurred"] for r in saved["per_image"]])
  np.testing.assert_allclose(saved["mean"]["blurred"]["psnr"], mean_in, rtol=1e-9)
  report = open(os.path.join(workdir, "report.md")).read()
  assert f"| blurred input | {mean_in:.2f} |" in report
  assert f"| 0 | {row['source']} | {row['psnr_blurred']:.2f} |" in report
  # The evaluation blur is fixed: a second evaluation gives identical numbers.
  again = evaluate.evaluate(tiny_config, workdir)
  assert again["mean"] == results["mean"]


def test_evaluate_without_checkpoint_fails_clearly(tiny_config, tmp_path):
  try:
    evaluate.evaluate(tiny_config, str(tmp_path))
  except FileNotFoundError as e:
    assert "no checkpoint" in str(e) and str(tmp_path) in str(e)
  else:
    raise AssertionError("expected FileNotFoundError")


def test_non_finite_loss_stops_naming_the_step_before_any_save(tiny_config, tmp_path,
                                                               monkeypatch):
  # Parameters become NaN in the update of step 3 (Adam's count 2), so the loss of step 4 is
  # the first non-finite one; logging happens only at step 6, a checkpoint is due at steps 2
  # and 4: the one of step 4 (a state updated by a NaN step) must not be written.
  monkeypatch.setattr(state_lib, "learning_rate_schedule",
                      lambda cfg: (lambda count: jnp.where(count >= 2, jnp.nan, 1e-3)))
  tiny_config.train.num_steps = 6
  tiny_config.train.log_every = 6
  tiny_config.train.checkpoint_every = 2
  tiny_config.eval.every = 0
  try:
    train.train(tiny_config, str(tmp_path))
  except FloatingPointError as e:
    assert "at step 4" in str(e)
  else:
    raise AssertionError("expected FloatingPointError")
  saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert saved == [2]


def test_validation_logs_and_keeps_the_best_checkpoint(tiny_config, tmp_path):
  tiny_config.train.num_steps = 4
  tiny_config.eval.every = 2
  tiny_config.eval.num_validation = 5
  train.train(tiny_config, str(tmp_path))
  best = os.listdir(tmp_path / "best")
  assert len([d for d in best if d.isdigit()]) == 1  # only the best of steps 2 and 4 is kept
  lines = [json.loads(l) for l in open(tmp_path / "train_log.jsonl")]
  assert [l["step"] for l in lines] == [2, 4]
  assert all(np.isfinite(l["loss"]) for l in lines)


def test_ema_weights_are_used_for_evaluation(tiny_config, tmp_path):
  tiny_config.train.ema_decay = 0.5
  tiny_config.train.num_steps = 2
  tiny_config.eval.every = 0
  state = train.train(tiny_config, str(tmp_path))
  leaf = lambda p: np.asarray(p["head"]["kernel"])
  assert not np.allclose(leaf(state.ema_params), leaf(state.params))
  assert networks.inference_params(state) is state.ema_params


def test_checkpoint_from_8_devices_restores_on_a_2x4_mesh(tiny_config, tmp_path):
  tiny_config.train.num_steps = 2
  tiny_config.eval.every = 0
  saved = train.train(tiny_config, str(tmp_path))
  tiny_config.mesh_shape = (2, 4)
  mesh = parallel.make_mesh((2, 4))
  setup = train.Setup(tiny_config, mesh)
  restored = state_lib.restore_or_init(setup, state_lib.checkpointer(tiny_config, str(tmp_path)),
                                       mesh)
  assert int(restored.step) == 2
  kernel = restored.params["head"]["kernel"]
  assert kernel.sharding.mesh.shape == {"replica": 2, "data": 4}
  for a, b in zip(jax.tree.leaves(jax.device_get(saved)), jax.tree.leaves(jax.device_get(restored))):
    np.testing.assert_array_equal(a, b)
  # and it trains on: a batch split over both axes of the 2-D mesh
  restored, m = setup.step(restored, _batch(tiny_config, mesh))
  assert int(restored.step) == 3 and np.isfinite(float(m["loss"]))


def test_warmup_ramps_linearly_then_follows_the_schedule(tiny_config):
  cfg = tiny_config.train
  cfg.update(schedule="cosine", learning_rate=1e-3, num_steps=100)
  plain = state_lib.learning_rate_schedule(cfg)
  cfg.warmup_steps = 10
  warm = state_lib.learning_rate_schedule(cfg)
  np.testing.assert_allclose([float(warm(s)) for s in (0, 5, 10)], [0.0, 5e-4, float(plain(10))],
                             rtol=1e-6)
  for s in (11, 50, 99):  # after the ramp: the same cosine over num_steps, not shifted
    np.testing.assert_allclose(float(warm(s)), float(plain(s)), rtol=1e-6)
