"""Motion blur by averaging consecutive video frames (Chrysos et al. 2019, Sec. 3.3 and 5.2).

Clips are [B, T, H, W, C] in [0, 1]; the ground truth is always the middle frame m = (T - 1) // 2
and a window of L frames around it is averaged in linear light (inverse camera response before,
response after: Eq. 8's psi-hat). L is per sample; shapes stay static because the window is a
[B, T] weight mask.

- PrAvg(L): the L frames around the middle frame, L drawn from a fixed list.
- VLA: the window grows symmetrically around the middle frame (L = 1, 3, 5, ...) until a stop
  condition fires on the next candidate window; L is the last window that passed, clamped to
  [L_min, L_max]. Stop conditions, on the candidate window [m - r, m + r]:
  (i) face overlap: IoU of the face boxes of its first and last frame < vla_min_iou;
  (ii) quality: PSNR of the running average against the middle frame < vla_min_psnr (dB);
  (iii) motion: the motion summed over the window's consecutive frame pairs > vla_max_motion, or
       one pair's motion > vla_max_step (a cut, a tracking jump), both as fractions of min(H, W).
  The motion of a frame pair is the batch's `flow` [B, T - 1] (e.g. mean optical-flow magnitude in
  pixels computed on the host when the dataset is built) when present, else estimated on the device
  by phase correlation of consecutive frames (Hann-windowed on the middle frame's face box when
  boxes are given). Phase correlation gives a displacement in pixels, so thresholds keep their
  meaning across datasets, and it is a few FFTs per frame: dense optical flow does not belong in
  the train step.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

RESPONSES = ("gamma", "srgb", "none")


# ------------------------------------------------------------------------------------------------
# Camera response.


def inverse_response(x: jax.Array, kind: str = "gamma", gamma: float = 2.2) -> jax.Array:
  """Display values in [0, 1] -> linear light (psi-hat inverse)."""
  x = jnp.clip(x, 0.0, 1.0)
  if kind == "gamma":
    return x if gamma == 1.0 else jnp.power(x, gamma)
  if kind == "srgb":
    return jnp.where(x <= 0.04045, x / 12.92, jnp.power((x + 0.055) / 1.055, 2.4))
  if kind == "none":
    return x
  raise ValueError(f"camera_response must be one of {RESPONSES}, got {kind!r}")


def response(x: jax.Array, kind: str = "gamma", gamma: float = 2.2) -> jax.Array:
  """Linear light in [0, 1] -> display values (psi-hat)."""
  x = jnp.clip(x, 0.0, 1.0)
  if kind == "gamma":
    return x if gamma == 1.0 else jnp.power(x, 1.0 / gamma)
  if kind == "srgb":
    return jnp.where(x <= 0.0031308, 12.92 * x,
                     1.055 * jnp.power(jnp.maximum(x, 0.0031308), 1.0 / 2.4) - 0.055)
  if kind == "none":
    return x
  raise ValueError(f"camera_response must be one of {RESPONSES}, got {kind!r}")


# ------------------------------------------------------------------------------------------------
# Windows and averages.


def middle_frame(num_frames: int) -> int:
  """The sharp frame of a clip of `num_frames`: index (T - 1) // 2 (the centre of the odd
  averaging windows; for even T the earlier of the two middle frames)."""
  return (num_frames - 1) // 2


def corner_boxes(box):
  """Face boxes (x, y, w, h) [..., 4] -> (x_min, y_min, x_max, y_max); numpy or jax arrays."""
  return jnp.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1)


@functools.partial(jax.jit, static_argnames=("num_frames",))
def window_weights(length: jax.Array, num_frames: int) -> jax.Array:
  """[B] lengths -> [B, T] masks of the L consecutive frames around the middle frame (for even L
  one more frame after the middle than before)."""
  m = middle_frame(num_frames)
  t = jnp.arange(num_frames)[None, :]
  start = m - (length[:, None] - 1) // 2
  return ((t >= start) & (t < start + length[:, None])).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("kind", "gamma"))
def average_frames(frames: jax.Array, weights: jax.Array, kind: str = "gamma",
                   gamma: float = 2.2) -> jax.Array:
  """Weighted mean over T in linear light. frames [B, T, H, W, C], weights [B, T] -> [B, H, W, C]."""
  lin = inverse_response(frames, kind, gamma)
  w = weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
  avg = jnp.einsum("bthwc,bt->bhwc", lin, w, precision=jax.lax.Precision.HIGHEST)
  return response(avg, kind, gamma)


@functools.partial(jax.jit, static_argnames=("kind", "gamma"))
def pravg(frames: jax.Array, length, kind: str = "gamma", gamma: float = 2.2):
  """PrAvg(L): mean of the L frames around the middle one. length: int or [B].
  Returns (blurry [B, H, W, C], sharp = middle frame)."""
  b, t = frames.shape[:2]
  length = jnp.broadcast_to(jnp.asarray(length, jnp.int32), (b,))
  return average_frames(frames, window_weights(length, t), kind, gamma), frames[:, middle_frame(t)]


# ------------------------------------------------------------------------------------------------
# VLA stop conditions.


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """IoU of boxes [..., 4] given as (x_min, y_min, x_max, y_max)."""
  iw = jnp.maximum(0.0, jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]))
  ih = jnp.maximum(0.0, jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]))
  inter = iw * ih
  area = lambda x: jnp.maximum(0.0, x[..., 2] - x[..., 0]) * jnp.maximum(0.0, x[..., 3] - x[..., 1])
  return inter / jnp.maximum(area(a) + area(b) - inter, 1e-12)


def boxes_from_landmarks(landmarks: jax.Array) -> jax.Array:
  """[..., P, 2] (x, y) points -> [..., 4] tight boxes."""
  return jnp.concatenate([landmarks.min(axis=-2), landmarks.max(axis=-2)], axis=-1)


def _hann(n: int, lo: jax.Array, hi: jax.Array) -> jax.Array:
  """[B] intervals -> [B, n] Hann windows over [lo, hi] (zero outside)."""
  x = jnp.arange(n, dtype=jnp.float32)[None, :] + 0.5
  u = (x - lo[:, None]) / jnp.maximum(hi - lo, 1.0)[:, None]
  return jnp.where((u >= 0) & (u <= 1), 0.5 - 0.5 * jnp.cos(2 * jnp.pi * u), 0.0)


def phase_correlation(x: jax.Array) -> jax.Array:
  """Real frames [B, T, H, W] -> [B, T - 1, H, W] phase correlation of consecutive frames: the
  inverse FFT of their normalised cross-power spectrum. Real input: the half spectrum (rfft2)
  holds all of it and irfft2 is the real part of the full inverse, so this equals the complex
  FFT's surface for less (XLA:TPU computes these FFTs as DFT matmuls; with the complex FFT they
  were nine tenths of chrysos2019's blur; this cut the blur's FLOPs by 25 %, its bytes by 10 %)."""
  h, w = x.shape[-2:]
  spec = jnp.fft.rfft2(x, axes=(-2, -1))
  cross = spec[:, :-1] * jnp.conj(spec[:, 1:])
  cross = cross / jnp.maximum(jnp.abs(cross), 1e-9)
  return jnp.fft.irfft2(cross, s=(h, w), axes=(-2, -1))


@jax.jit
def phase_correlation_shifts(frames: jax.Array, boxes: jax.Array | None = None) -> jax.Array:
  """Global displacement in pixels between consecutive frames, [B, T, H, W, C] -> [B, T - 1, 2]
  as (dx, dy), by phase correlation (peak of the normalised cross-power spectrum, refined to
  sub-pixel by a parabola through the peak and its neighbours). With boxes [B, T, 4], a separable
  Hann window over the middle frame's box, grown by half, restricts it to the face."""
  b, t, h, w = frames.shape[:4]
  gray = frames.astype(jnp.float32).mean(axis=-1)
  if boxes is None:
    box = jnp.broadcast_to(jnp.array([0.0, 0.0, w, h], jnp.float32), (b, 4))
  else:
    mb = boxes[:, middle_frame(t)].astype(jnp.float32)
    c = (mb[:, :2] + mb[:, 2:]) / 2
    half = (mb[:, 2:] - mb[:, :2]) * 0.75
    box = jnp.concatenate([c - half, c + half], axis=-1)
  win = _hann(h, box[:, 1], box[:, 3])[:, :, None] * _hann(w, box[:, 0], box[:, 2])[:, None, :]
  g = gray - (gray * win[:, None]).sum(axis=(2, 3), keepdims=True) / jnp.maximum(
      win.sum(axis=(1, 2))[:, None, None, None], 1e-6)
  corr = phase_correlation(g * win[:, None])  # peak at -(shift of frame t+1 vs t)
  flat = corr.reshape(b, t - 1, h * w)
  idx = jnp.argmax(flat, axis=-1)
  py, px = idx // w, idx % w

  def refine(c0, cm, cp):
    den = cm - 2 * c0 + cp
    return jnp.where(jnp.abs(den) > 1e-9, 0.5 * (cm - cp) / den, 0.0).clip(-0.5, 0.5)

  take = lambda yy, xx: jnp.take_along_axis(flat, ((yy % h) * w + xx % w)[..., None], -1)[..., 0]
  c0 = take(py, px)
  dy = py + refine(c0, take(py - 1, px), take(py + 1, px))
  dx = px + refine(c0, take(py, px - 1), take(py, px + 1))
  wrap = lambda d, n: jnp.where(d > n / 2, d - n, d)
  return -jnp.stack([wrap(dx, w), wrap(dy, h)], axis=-1)


@jax.jit
def motion_magnitudes(frames: jax.Array, boxes: jax.Array | None = None) -> jax.Array:
  """[B, T, H, W, C] -> [B, T - 1] displacement in pixels between consecutive frames."""
  d = phase_correlation_shifts(frames, boxes)
  return jnp.sqrt(jnp.sum(d * d, axis=-1))


@functools.partial(jax.jit, static_argnames=("min_iou", "min_psnr", "max_motion", "max_step",
                                             "kind", "gamma"))
def vla_stops(frames: jax.Array, *, boxes: jax.Array | None = None,
              motion: jax.Array | None = None, min_iou: float = 0.5, min_psnr: float = 24.0,
              max_motion: float = 0.15, max_step: float = 0.05, kind: str = "gamma",
              gamma: float = 2.2) -> dict:
  """Which stop condition fires for each candidate radius r = 0 .. (T - 1) // 2 (window
  [m - r, m + r]). Returns bool [B, R + 1] arrays 'overlap', 'quality', 'motion' and 'any', and
  float [B, R + 1] 'iou', 'psnr', 'motion_sum' (pixels). `motion` [B, T - 1] is in pixels (None:
  no motion condition). max_motion and max_step are fractions of min(H, W)."""
  b, t, h, w = frames.shape[:4]
  m = middle_frame(t)
  radii = np.arange(m + 1)
  scale = float(min(h, w))
  first, last = m - radii, m + radii  # static indices

  if boxes is not None:
    iou = box_iou(boxes[:, first].astype(jnp.float32), boxes[:, last].astype(jnp.float32))
  else:
    iou = jnp.ones((b, radii.size), jnp.float32)
  overlap = iou < min_iou

  # Running average of the growing window, by a scan over r (one frame of memory per sample; the
  # frames are read in place, in display values, and linearised one at a time).
  sharp = frames[:, m].astype(jnp.float32)

  def body(acc, r):
    lo = inverse_response(jax.lax.dynamic_index_in_dim(frames, m - r, 1, keepdims=False), kind,
                          gamma)
    hi = inverse_response(jax.lax.dynamic_index_in_dim(frames, m + r, 1, keepdims=False), kind,
                          gamma)
    acc = acc + jnp.where(r == 0, 0.5, 1.0) * (lo + hi)
    avg = response(acc / (2 * r + 1).astype(jnp.float32), kind, gamma)
    mse = jnp.mean((avg - sharp) ** 2, axis=(1, 2, 3))
    return acc, 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-20))

  _, psnr = jax.lax.scan(body, jnp.zeros_like(sharp), jnp.arange(m + 1))
  psnr = psnr.T  # [B, R+1]
  quality = psnr < min_psnr

  if motion is not None:
    motion = motion.astype(jnp.float32)
    pair_t = np.arange(t - 1)
    inside = (pair_t[None, :] >= first[:, None]) & (pair_t[None, :] < last[:, None])  # [R+1, T-1]
    inside = jnp.asarray(inside, jnp.float32)
    motion_sum = jnp.einsum("bp,rp->br", motion, inside)
    motion_max = jnp.max(motion[:, None, :] * inside[None], axis=-1)
    moving = (motion_sum > max_motion * scale) | (motion_max > max_step * scale)
  else:
    motion_sum = jnp.zeros((b, radii.size), jnp.float32)
    moving = jnp.zeros((b, radii.size), bool)

  return {"overlap": overlap, "quality": quality, "motion": moving,
          "any": overlap | quality | moving, "iou": iou, "psnr": psnr, "motion_sum": motion_sum}


@functools.partial(jax.jit, static_argnames=("l_min", "l_max"))
def vla_lengths(stops: jax.Array, l_min: int, l_max: int) -> jax.Array:
  """[B, R + 1] stop flags -> [B] window lengths: 2 r + 1 for the last radius r before the first
  firing condition, clamped to [l_min, l_max] (odd)."""
  passed = jnp.cumprod(~stops, axis=1)  # 1 while no condition has fired yet
  r = jnp.maximum(passed.sum(axis=1) - 1, 0)
  return jnp.clip(2 * r + 1, l_min, l_max).astype(jnp.int32)
