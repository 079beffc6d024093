"""The entry point `degrade(key, batch, cfg)`: mixtures, determinism, batch independence, one
compilation per shape, and the callers' inputs (image arrays, clip dicts, raw keys, uint8)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import config_lib, degrade
from fdeblur.degrade import apply, kernels

T = 7


def _mix_cfg(**kw):
  c = config_lib.base_config().blur
  c.update(dict(kernel_size=7, motion_length=(2.0, 6.0), gaussian_anisotropic_prob=0.5,
                gaussian_prob=0.2, motion_prob=0.2, trajectory_prob=0.2, pravg_prob=0.2,
                vla_prob=0.2, trajectory_canvas=16, trajectory_max_len=12.0, trajectory_iters=300,
                fft_min_kernel_size=15, pravg_lengths=(3, 5, 7), vla_length=(1, 7)), **kw)
  return c


@pytest.fixture(scope="module")
def clips():
  rng = np.random.default_rng(0)
  base = rng.uniform(size=(6, 1, 24, 24, 3)).astype(np.float32)
  frames = np.concatenate([np.roll(base, i, axis=3) for i in range(T)], axis=1)  # moving right
  boxes = np.tile(np.array([4.0, 4.0, 20.0, 20.0], np.float32), (6, T, 1))
  boxes[..., 0::2] += np.arange(T, dtype=np.float32)[None, :, None]
  return {"frames": jnp.asarray(frames), "boxes": jnp.asarray(boxes)}


IDX = np.array([4, 2, 3, 0, 5, 1])  # the second batch: shuffled, positions 0 and 3 get new keys


@pytest.fixture(scope="module")
def mixed(clips):
  """One compiled mixture, called twice on a batch and once on a reshuffled batch in which two
  samples have new keys."""
  traces = []

  def fn(k, b):
    traces.append(1)
    return degrade.degrade(k, b, _mix_cfg())

  fn = jax.jit(fn)
  keys = jax.random.split(jax.random.key(42), 6)
  full = fn(keys, clips)
  again = fn(keys, clips)
  keys2 = keys[IDX]
  keys2 = keys2.at[np.array([0, 3])].set(jax.random.split(jax.random.key(7), 2))
  other = fn(keys2, jax.tree.map(lambda x: x[IDX], clips))
  return full, again, other, len(traces)


def test_mixture_covers_every_protocol_and_kernels_are_normalised(mixed):
  (blurry, sharp, info), _, _, _ = mixed
  proto = np.asarray(info["protocol"])
  assert proto.min() >= 0 and proto.max() <= 4 and len(set(proto.tolist())) >= 3
  k = np.asarray(info["kernel"])
  assert k.shape == (6, 17, 17) and k.min() >= 0
  np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-6)
  assert blurry.shape == sharp.shape == (6, 24, 24, 3)
  assert float(blurry.min()) >= 0 and float(blurry.max()) <= 1
  length = np.asarray(info["length"])
  assert (length[proto < 3] == 1).all() and (length[proto >= 3] >= 1).all()
  assert not np.allclose(np.asarray(blurry), np.asarray(sharp), atol=1e-3)


def test_same_key_same_blur_and_no_recompilation(mixed):
  full, again, other, n_traces = mixed
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert n_traces == 1  # new keys and new data of the same shape reuse the compilation


def test_blur_of_a_sample_does_not_depend_on_the_batch(mixed):
  full, _, other, _ = mixed
  same = np.array([1, 2, 4, 5])  # positions of `other` with their original key and clip
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(other)):
    np.testing.assert_allclose(np.asarray(a)[IDX[same]], np.asarray(b)[same], atol=1e-6)


def test_kernel_samples_of_a_clip_blur_the_middle_frame(clips):
  cfg = _mix_cfg(pravg_prob=0.0, vla_prob=0.0)
  blurry, sharp, info = degrade.degrade(jax.random.key(1), clips, cfg)
  np.testing.assert_array_equal(np.asarray(sharp), np.asarray(clips["frames"][:, 3]))
  ref = apply.convolve(sharp, info["kernel"], method="direct")
  np.testing.assert_allclose(np.asarray(blurry), np.clip(np.asarray(ref), 0, 1), atol=2e-6)


def test_image_batches_drop_averaging_protocols_and_accept_raw_keys_and_uint8():
  cfg = _mix_cfg(trajectory_prob=0.0)
  sharp = np.random.default_rng(1).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
  raw = jax.random.key_data(jax.random.split(jax.random.key(3), 4))  # [4, 2] uint32
  blurry, s, info = degrade.degrade(raw, sharp, cfg)
  assert (np.asarray(info["protocol"]) < 2).all()
  np.testing.assert_allclose(np.asarray(s), sharp / 255.0, atol=1e-7)
  typed, _, _ = degrade.degrade(jax.random.wrap_key_data(raw), sharp, cfg)
  np.testing.assert_array_equal(np.asarray(blurry), np.asarray(typed))
  with pytest.raises(ValueError, match="clip batch"):
    degrade.degrade(raw, sharp, _mix_cfg(gaussian_prob=0.0, motion_prob=0.0, trajectory_prob=0.0))


def test_mixture_probabilities():
  p = degrade.mixture(_mix_cfg(), clips=True)
  np.testing.assert_allclose(p, 0.2)
  np.testing.assert_allclose(degrade.mixture(_mix_cfg(), clips=False)[:3], 1 / 3)
  keys = jax.random.split(jax.random.key(0), 4000)
  cfg = _mix_cfg(gaussian_prob=0.5, motion_prob=0.0, trajectory_prob=0.0, pravg_prob=0.2,
                 vla_prob=0.3)
  u = jax.vmap(jax.random.uniform)(keys)  # degrade's draw: inverse CDF of one uniform
  proto = np.asarray(kernels.protocol_from_uniform(u, degrade.mixture(cfg, clips=True)))
  freq = np.bincount(proto, minlength=5) / len(proto)
  np.testing.assert_allclose(freq, [0.5, 0, 0, 0.2, 0.3], atol=0.03)
