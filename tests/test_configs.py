"""Every method's config trains: its `tiny` variant (same structure, small sizes) runs 3 steps
of its own objective with finite losses and moving parameters."""
import jax
import numpy as np
import pytest

from conftest import load_config
from fdeblur import parallel, state as state_lib, train
from input_pipeline import pipeline


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _train_steps(cfg, n=3):
  mesh = parallel.make_mesh()
  setup = train.Setup(cfg, mesh)
  state = jax.device_put(setup.init_state(), parallel.replicated(mesh))
  before = (_leaves(state.params), _leaves(state.d_params), jax.device_get(state.params))
  ds = pipeline.train_dataset(cfg.dataset, seed=0, local_batch_size=cfg.train.batch_size)
  history = []
  for i in range(n):
    state, m = setup.step(state, parallel.global_batch(ds[i], mesh))
    history.append({k: float(v) for k, v in jax.device_get(m).items()})
  return state, before, history


def _moved(before, after):
  return sum(not np.array_equal(a, b) for a, b in zip(before, after))


def _tiny_config(name, variant, data_dir):
  cfg = load_config(name, variant)
  cfg.dataset.data_dir = data_dir
  if cfg.dataset.name == "embedded_photos":  # built in test_embedded_photos; the step is tested here
    cfg.dataset.name = "embedded_faces"
  return cfg


@pytest.mark.parametrize("name,variant", [
    ("quickstart", "tiny"), ("chrysos2017", "tiny"), ("hourglass", "tiny"),
    ("fan_luo", "gan,tiny"), ("fan_luo", "lsgan,tiny"), ("fan_luo", "wgan_gp,tiny"),
    ("face_model", "tiny")])
def test_tiny_variant_trains(name, variant, data_dir):
  cfg = _tiny_config(name, variant, data_dir)
  state, (g0, d0, _), history = _train_steps(cfg)
  for h in history:
    assert all(np.isfinite(v) for v in h.values()), h
  assert _moved(g0, _leaves(state.params)) > len(g0) // 2
  if cfg.discriminator.name:
    assert _moved(d0, _leaves(state.d_params)) > len(d0) // 2
    assert "adversarial" in history[0] and "d_loss" in history[0]
  if cfg.gan.kind == "wgan_gp" and cfg.objective == "gan":
    assert history[0]["d_gradient_penalty"] > 0
  if cfg.loss.perceptual_weight:
    assert history[0]["perceptual"] > 0


def test_chrysos2019_trains_on_clips_with_the_frozen_stage1(video_data_dir, tmp_path):
  # Stage 1: an hourglass:tiny state (the hourglass of chrysos2019:tiny: 2 stacks of 8
  # features) saved as train.train saves its runs, with its weights and batch statistics moved
  # off their initial values, so that only a real graft makes them equal below. Training it
  # first would add an hourglass step's compilation and test nothing more: its steps are
  # test_tiny_variant_trains's, and the grafting reads weights and batch statistics whatever
  # the image size.
  stage1 = load_config("hourglass", "tiny")  # no data: its state is only initialised
  hg_state = train.Setup(stage1, parallel.make_mesh()).init_state()
  initial = _leaves((hg_state.params, hg_state.model_state))
  rng = np.random.default_rng(0)
  params, model_state = jax.tree.map(
      lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype),
      (hg_state.params, hg_state.model_state))
  hg_state = hg_state.replace(params=params, model_state=model_state)
  assert _moved(initial, _leaves((params, model_state))) == len(initial)
  ckpt = state_lib.checkpointer(stage1, str(tmp_path / "stage1"))
  ckpt.save(1, state_lib.state_to_checkpoint(hg_state), force=True)
  ckpt.close()

  data_dir, manual_dir = video_data_dir
  cfg = load_config("chrysos2019", "tiny")
  cfg.dataset.data_dir, cfg.dataset.manual_dir = data_dir, manual_dir
  cfg.model.hourglass_checkpoint = str(tmp_path / "stage1")
  state, (g0, d0, params0), history = _train_steps(cfg)
  for h in history:
    assert all(np.isfinite(v) for v in h.values()), h
    assert {"pixel", "gradient", "projection", "reconstruction", "adversarial"} <= set(h)
  # the hourglass is the stage-1 run's and stays frozen; G_bl, G_s and D learn
  loaded = _leaves(hg_state.params)
  now = _leaves(state.params["generator"]["hourglass"])
  assert all(np.array_equal(a, b) for a, b in zip(loaded, now))
  assert _moved(_leaves(hg_state.model_state), _leaves(state.model_state["generator"]["hourglass"])) == 0
  # G_bl (its encoder and the shared decoder) and G_s (its own encoder) moved away from
  # their values before training
  for path in (("generator", "g_bl", "encoder"), ("generator", "g_bl", "decoder"),
               ("identity_stream", "encoder")):
    before, after = params0, state.params
    for key in path:
      before, after = before[key], after[key]
    b, a = _leaves(before), _leaves(after)
    assert _moved(b, a) > len(b) // 2, path
  assert _moved(d0, _leaves(state.d_params)) > len(d0) // 2


def test_perceptual_loss_without_weights_names_the_flag():
  cfg = load_config("fan_luo", "tiny")  # the paper's networks at tiny widths: built faster
  cfg.perceptual.weights = ""  # as the full config ships: no VGG19 file named
  with pytest.raises(ValueError, match="config.perceptual.weights"):
    train.Setup(cfg, parallel.make_mesh())


def test_chrysos2019_without_stage1_checkpoint_is_explained(tmp_path):
  cfg = load_config("chrysos2019", "tiny")
  cfg.model.hourglass_checkpoint = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="hourglass"):
    train.Setup(cfg, parallel.make_mesh()).init_state()
