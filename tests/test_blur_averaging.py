"""Frame averaging: PrAvg(L) and VLA's stop conditions on constructed clips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import config_lib, degrade
from fdeblur.degrade import averaging


def _cfg(**kw):
  c = config_lib.base_config().blur
  c.update(dict(gaussian_prob=0.0, motion_prob=0.0), **kw)
  return c


def _texture(rng, h, w, c=1, smooth=True):
  x = rng.uniform(size=(h, w, c))
  if smooth:  # some spatial correlation, like a photograph
    x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, (1, 1), (0, 1))) / 4
  return x.astype(np.float32)


def test_window_weights_are_centred_on_the_middle_frame():
  w = np.asarray(averaging.window_weights(jnp.array([1, 3, 4, 7]), 7))
  np.testing.assert_array_equal(w[0], [0, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(w[1], [0, 0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(w[2], [0, 0, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(w[3], [1] * 7)


@pytest.mark.parametrize("kind", ["gamma", "srgb", "none"])
def test_camera_response_inverts(kind):
  x = jnp.linspace(0.0, 1.0, 101)
  lin = averaging.inverse_response(x, kind, 2.2)
  np.testing.assert_allclose(np.asarray(averaging.response(lin, kind, 2.2)), np.asarray(x),
                             atol=2e-6)
  assert (np.diff(np.asarray(lin)) >= 0).all()
  if kind != "none":
    assert float(lin[50]) < 0.25  # mid-grey is much darker in linear light


def test_pravg1_is_identity_and_static_clip_is_the_frame():
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.uniform(size=(2, 7, 12, 10, 3)), jnp.float32)
  blurry, sharp = averaging.pravg(frames, 1)
  np.testing.assert_allclose(np.asarray(blurry), np.asarray(frames[:, 3]), atol=2e-6)
  np.testing.assert_array_equal(np.asarray(sharp), np.asarray(frames[:, 3]))
  static = jnp.repeat(frames[:, :1], 7, axis=1)
  for length in (3, 5, 7):
    blurry, _ = averaging.pravg(static, length)
    np.testing.assert_allclose(np.asarray(blurry), np.asarray(static[:, 0]), atol=2e-6)


def test_pravg_averages_in_linear_light():
  rng = np.random.default_rng(1)
  frames = rng.uniform(size=(1, 5, 4, 4, 3)).astype(np.float32)
  blurry, _ = averaging.pravg(jnp.asarray(frames), 3, "gamma", 2.2)
  ref = np.mean(frames[0, 1:4].astype(np.float64) ** 2.2, axis=0) ** (1 / 2.2)
  np.testing.assert_allclose(np.asarray(blurry)[0], ref, atol=1e-5)
  plain = frames[0, 1:4].mean(axis=0)
  assert np.abs(ref - plain).max() > 0.02  # linear light makes a difference


@pytest.mark.parametrize("k", [1, 3, 4])
def test_vla_stops_when_the_face_leaves_its_box(k):
  """Static content; the face box stays put for k frames either side of the middle, then jumps
  away (left before, right after: first and last frame do not overlap): the window stops at
  L = 2k + 1."""
  t, m = 13, 6
  frames = jnp.ones((1, t, 8, 8, 1), jnp.float32) * 0.5
  boxes = np.tile(np.array([10.0, 10.0, 30.0, 30.0]), (1, t, 1))
  boxes[0, np.arange(t) < m - k] -= 100.0
  boxes[0, np.arange(t) > m + k] += 100.0
  stops = averaging.vla_stops(frames, boxes=jnp.asarray(boxes))
  assert not np.asarray(stops["quality"]).any() and not np.asarray(stops["motion"]).any()
  np.testing.assert_array_equal(np.asarray(stops["overlap"])[0], np.arange(m + 1) > k)
  assert int(averaging.vla_lengths(stops["any"], 1, 13)[0]) == 2 * k + 1
  assert int(averaging.vla_lengths(stops["any"], 5, 13)[0]) == max(2 * k + 1, 5)  # L_min floors
  assert int(averaging.vla_lengths(stops["any"], 1, 5)[0]) == min(2 * k + 1, 5)  # L_max caps


def test_vla_overlap_threshold_on_a_sliding_box():
  """A 40 px box slides 1 px per frame: IoU(first, last) = (40 - 2r) / (40 + 2r) >= 0.5 up to
  r = 6, so L = 13."""
  t = 21
  frames = jnp.full((1, t, 8, 8, 1), 0.3, jnp.float32)
  x0 = np.arange(t, dtype=np.float32)
  boxes = np.stack([x0, np.zeros(t), x0 + 40, np.full(t, 40.0)], -1)[None]
  stops = averaging.vla_stops(frames, boxes=jnp.asarray(boxes), min_iou=0.5)
  r = np.arange(11)
  np.testing.assert_allclose(np.asarray(stops["iou"])[0], (40 - 2 * r) / (40 + 2 * r), rtol=1e-6)
  assert int(averaging.vla_lengths(stops["any"], 1, 21)[0]) == 13


@pytest.mark.parametrize("min_psnr,expected", [(22.0, 3), (21.5, 5), (30.0, 1)])
def test_vla_stops_when_the_running_average_drifts_from_the_middle_frame(min_psnr, expected):
  """Middle frame 0.5, every other frame 0.6 (no camera response): the average of 2r + 1 frames
  is off by 0.1 * 2r / (2r + 1), PSNR 23.5 dB (r=1), 21.9 (r=2), 21.4 (r=3)."""
  t = 9
  frames = np.full((1, t, 6, 6, 3), 0.6, np.float32)
  frames[0, 4] = 0.5
  stops = averaging.vla_stops(jnp.asarray(frames), min_psnr=min_psnr, kind="none")
  r = np.arange(1, 5)
  np.testing.assert_allclose(np.asarray(stops["psnr"])[0, 1:],
                             -20 * np.log10(0.1 * 2 * r / (2 * r + 1)), atol=1e-3)
  assert int(averaging.vla_lengths(stops["any"], 1, 9)[0]) == expected


def test_phase_correlation_measures_translation():
  rng = np.random.default_rng(2)
  tex = _texture(rng, 32, 32, 3)
  shifts = [(2, 0), (0, -3), (1, 1), (-2, 3)]
  frames = [tex]
  for dx, dy in shifts:
    frames.append(np.roll(frames[-1], (dy, dx), axis=(0, 1)))
  d = np.asarray(averaging.phase_correlation_shifts(jnp.asarray(np.stack(frames)[None])))[0]
  np.testing.assert_allclose(d, np.array(shifts, np.float32), atol=0.3)


@pytest.mark.parametrize("h, w", [(16, 12), (15, 9)])
def test_phase_correlation_equals_the_complex_fft_surface(h, w):
  """The half-spectrum (rfft2) surface is the plain complex-FFT one, for even and odd sizes."""
  x = np.random.default_rng(5).normal(size=(2, 4, h, w))
  spec = np.fft.fft2(x, axes=(2, 3))
  cross = spec[:, :-1] * np.conj(spec[:, 1:])
  ref = np.real(np.fft.ifft2(cross / np.abs(cross), axes=(2, 3)))
  got = np.asarray(averaging.phase_correlation(jnp.asarray(x, jnp.float32)))
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, atol=1e-6)


def test_vla_stops_on_motion_out_of_bounds():
  """A texture moving 2 px per frame: cumulative motion 4 r px exceeds 0.15 * 32 = 4.8 px at
  r = 2, so L = 3. A clip that is static except one 5 px jump (> 0.1 * 32 = 3.2 px) between
  frames m + 2 and m + 3 stops at r = 3, so L = 5."""
  rng = np.random.default_rng(3)
  tex = _texture(rng, 32, 32)
  t, m = 11, 5
  moving = np.stack([np.roll(tex, 2 * (i - m), axis=1) for i in range(t)])
  jump = np.stack([np.roll(tex, 5 if i > m + 2 else 0, axis=0) for i in range(t)])
  frames = jnp.asarray(np.stack([moving, jump]))
  motion = averaging.motion_magnitudes(frames)
  np.testing.assert_allclose(np.asarray(motion)[0], 2.0, atol=0.3)
  np.testing.assert_allclose(np.asarray(motion)[1], np.where(np.arange(t - 1) == m + 2, 5, 0),
                             atol=0.3)
  stops = averaging.vla_stops(frames, motion=motion, min_psnr=-1.0, max_motion=0.15, max_step=0.1)
  assert not np.asarray(stops["quality"]).any()
  np.testing.assert_array_equal(np.asarray(averaging.vla_lengths(stops["any"], 1, 11)), [3, 5])


def test_degrade_vla_and_pravg_on_clip_batches():
  """Through the entry point: per-sample L, flow from the batch, boxes, info fields."""
  t, m = 9, 4
  rng = np.random.default_rng(4)
  frames = np.repeat(_texture(rng, 16, 16, 3)[None, None], 3, 0).repeat(t, 1)  # static clips
  boxes = np.tile(np.array([2.0, 2.0, 14.0, 14.0], np.float32), (3, t, 1))
  boxes[0, :m - 1, 0::2] -= 50.0  # sample 0: the face moved out of the box beyond r = 1
  boxes[0, m + 2:, 0::2] += 50.0
  flow = np.zeros((3, t - 1), np.float32)
  flow[1, m + 2] = 10.0  # sample 1: a cut beyond r = 2 (10 px > 0.05 * 16)
  batch = {"frames": jnp.asarray(frames), "boxes": jnp.asarray(boxes), "flow": jnp.asarray(flow)}
  cfg = _cfg(vla_prob=1.0, vla_length=(1, 9))
  blurry, sharp, info = degrade.degrade(jax.random.key(0), batch, cfg)
  np.testing.assert_array_equal(np.asarray(info["protocol"]), 4)
  np.testing.assert_array_equal(np.asarray(info["length"]), [3, 5, 9])
  np.testing.assert_allclose(np.asarray(blurry), frames[:, m], atol=3e-6)  # static clips
  np.testing.assert_array_equal(np.asarray(sharp), frames[:, m])
  # kernels of averaging samples are deltas
  k = np.asarray(info["kernel"])
  assert (k[:, k.shape[1] // 2, k.shape[2] // 2] == 1.0).all()

  cfg = _cfg(pravg_prob=1.0, pravg_lengths=(3, 7))
  moving = jnp.asarray(np.stack([np.roll(frames[0, 0], i, axis=1) for i in range(t)])[None]
                       .repeat(16, 0))
  keys = jax.random.split(jax.random.key(1), 16)
  blurry, sharp, info = degrade.degrade(keys, {"frames": moving}, cfg)
  lengths = np.asarray(info["length"])
  assert set(lengths.tolist()) == {3, 7}
  for i in range(16):
    ref, _ = averaging.pravg(moving[i:i + 1], int(lengths[i]))
    np.testing.assert_allclose(np.asarray(blurry[i]), np.asarray(ref[0]), atol=1e-6)


def test_clip_length_is_checked():
  frames = {"frames": jnp.zeros((1, 5, 8, 8, 3))}
  with pytest.raises(ValueError, match="pravg_lengths"):
    degrade.degrade(jax.random.key(0), frames, _cfg(pravg_prob=1.0))  # PrAvg(7..21) on 5 frames
  with pytest.raises(ValueError, match="L_min"):
    degrade.degrade(jax.random.key(0), frames, _cfg(vla_prob=1.0, vla_length=(7, 21)))
