"""Blur synthesis on the device: one jit-compilable entry point, `degrade(key, batch, cfg)`.

Each sample draws its protocol from the configured mixture with its own PRNG key, so its blur never
depends on the batch it is in, and every shape is static, so a train step compiles once:

| id | protocol   | input                      | blur                                                   |
|----|------------|----------------------------|--------------------------------------------------------|
| 0  | gaussian   | images or clips            | isotropic / anisotropic Gaussian kernel                |
| 1  | motion     | images or clips            | linear motion kernel (sub-pixel, anti-aliased)         |
| 2  | trajectory | images or clips            | Boracchi & Foi camera-shake PSF (DeblurGAN's kernels)  |
| 3  | pravg      | clips {"frames": ...}      | PrAvg(L): mean of L frames around the middle one       |
| 4  | vla        | clips {"frames": ...}      | variable-length averaging with the 2019 stop conditions|

A share `sharp_prob` of kernel samples gets a delta kernel instead (sharp inputs: the model must
learn to leave them alone). Kernels are applied by `convolve` (direct or FFT, chosen by kernel
size); clips' kernel samples blur the middle frame. Then optional sensor noise, a clip to [0, 1],
and optional JPEG compression (`jpeg_prob`, on the device). Submodules: `kernels`, `apply`,
`averaging`, `noise`, `jpeg`.
"""
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fdeblur.degrade import apply, averaging, jpeg, kernels, noise


def mixture(cfg: ml_collections.ConfigDict, clips: bool) -> np.ndarray:
  """Static protocol probabilities in `kernels.PROTOCOLS` order, normalised. For image batches (clips=False)
  the averaging protocols are dropped and the kernel families renormalised."""
  p = np.array([cfg.gaussian_prob, cfg.motion_prob, cfg.trajectory_prob, cfg.pravg_prob,
                cfg.vla_prob], np.float64)
  if (p < 0).any():
    raise ValueError(f"config.blur protocol probabilities must be >= 0, got {p.tolist()}")
  if not clips:
    p[3:] = 0.0
  if p.sum() <= 0:
    raise ValueError("config.blur gives this batch no protocol: pravg/vla need a clip batch "
                     "{'frames': [B, T, H, W, C]}, images need gaussian/motion/trajectory_prob > 0")
  return p / p.sum()


def per_sample_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """One typed key per sample from one key (split) or [B] keys, typed or raw uint32."""
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)  # raw uint32 key data, [2] or [B, 2]
  if key.ndim == 0:
    return jax.random.split(key, batch_size)
  if key.shape != (batch_size,):
    raise ValueError(f"expected one key or {batch_size} keys, got key shape {key.shape}")
  return key


def _as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def _pravg_lengths(u, cfg, num_frames):
  """U [B] -> PrAvg lengths drawn uniformly from cfg.pravg_lengths."""
  lengths = [int(n) for n in cfg.pravg_lengths]
  if max(lengths) > num_frames or min(lengths) < 1:
    raise ValueError(f"config.blur.pravg_lengths {tuple(lengths)} need clips of at least "
                     f"{max(lengths)} frames; got T={num_frames}")
  idx = jnp.minimum((u * len(lengths)).astype(jnp.int32), len(lengths) - 1)
  return jnp.asarray(lengths, jnp.int32)[idx]


def _vla_bounds(cfg, num_frames):
  l_min, l_max = (int(n) for n in cfg.vla_length)
  if l_min % 2 != 1 or l_max % 2 != 1 or l_min > l_max:
    raise ValueError(f"config.blur.vla_length must be odd (L_min, L_max), got {(l_min, l_max)}")
  longest = num_frames - (1 - num_frames % 2)  # the longest odd window a clip holds
  if l_min > longest:
    raise ValueError(f"VLA needs clips of at least L_min={l_min} frames, got T={num_frames}")
  return l_min, min(l_max, longest)


def degrade(key: jax.Array, batch, cfg: ml_collections.ConfigDict, platform: str | None = None):
  """Blurs a batch on the device. Returns (blurry, sharp, info), images [B, H, W, C] in [0, 1].

  batch: sharp images [B, H, W, C] (float in [0, 1], or uint8), or a dict with "frames"
    [B, T, H, W, C] of consecutive frames (the sharp image is the middle frame (T - 1) // 2) and
    optionally "boxes" [B, T, 4] face boxes (x_min, y_min, x_max, y_max) or "landmarks"
    [B, T, P, 2] (x, y), and "flow" [B, T - 1] motion in pixels between consecutive frames.
  key: one key for the batch (split per sample) or [B] per-sample keys, typed or raw uint32.
  cfg: `config.blur`.
  platform: the platform the program is compiled for ("cpu", "gpu", "tpu"; default: JAX's
    default backend): picks FFT or direct convolution and how PSFs are splatted.
  info: "kernel" [B, K, K] (a delta for averaging samples), "protocol" [B] (index into
    kernels.PROTOCOLS), "length" [B] frames averaged (1 for kernel samples).

  The work is one jit-compiled function (cached per config and shapes), so eager callers compile
  once; inside a caller's jit it is inlined.
  """
  return _degrade_jit(key, batch, kernels.frozen(cfg), platform)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _degrade_jit(key, batch, cfg, platform):
  clips = isinstance(batch, Mapping)
  boxes = flow = frames = None
  if clips:
    frames = _as_float(batch["frames"])
    if frames.ndim != 5:
      raise ValueError(f"batch['frames'] must be [B, T, H, W, C], got {frames.shape}")
    num_frames = frames.shape[1]
    sharp = frames[:, averaging.middle_frame(num_frames)]
    boxes = batch.get("boxes")
    if boxes is None and batch.get("landmarks") is not None:
      boxes = averaging.boxes_from_landmarks(jnp.asarray(batch["landmarks"], jnp.float32))
    flow = batch.get("flow")
  else:
    sharp = _as_float(batch)
  # Static choices and checks first: nothing below depends on values.
  b = sharp.shape[0]
  probs = mixture(cfg, clips)
  size = kernels.kernel_support(cfg)
  kind = cfg.camera_response
  gamma = float(cfg.camera_gamma)
  motion_source = cfg.vla_motion
  if probs[4] > 0:
    l_min, l_max = _vla_bounds(cfg, num_frames)
    if motion_source not in ("phase_correlation", "none"):
      raise ValueError(f"config.blur.vla_motion must be 'phase_correlation' or 'none', got "
                       f"{motion_source!r}")
  if probs[3] > 0:
    _pravg_lengths(jnp.zeros((1,)), cfg, num_frames)  # validates the lengths against T

  keys = per_sample_keys(key, b)
  # Per sample: uniforms for the protocol and PrAvg's L, a key for the kernel, one for noise.
  k_u, k_kernel, k_noise = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(keys)
  u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(k_u)
  proto = kernels.protocol_from_uniform(u[:, 0], probs)

  if probs[:3].sum() > 0:
    ker = kernels.kernels_for(k_kernel, proto, cfg, platform)
    if cfg.sharp_prob > 0:  # its own stream: the other draws do not change with it
      u_sharp = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(k_u)
      delta = jnp.zeros_like(ker).at[:, size // 2, size // 2].set(1.0)
      ker = jnp.where((u_sharp < cfg.sharp_prob)[:, None, None], delta, ker)
    linear = cfg.kernels_in_linear_light
    src = averaging.inverse_response(sharp, kind, gamma) if linear else sharp
    blurry = apply.convolve(src, ker, fft_min_kernel_size=int(cfg.fft_min_kernel_size),
                            border=cfg.border, platform=platform)
    if linear:
      blurry = averaging.response(blurry, kind, gamma)
  else:
    ker = jnp.zeros((b, size, size), jnp.float32).at[:, size // 2, size // 2].set(1.0)
    blurry = sharp
  length = jnp.ones((b,), jnp.int32)

  if probs[3:].sum() > 0:
    length_avg = jnp.ones((b,), jnp.int32)
    if probs[3] > 0:
      length_avg = jnp.where(proto == 3, _pravg_lengths(u[:, 1], cfg, num_frames), length_avg)
    if probs[4] > 0:  # VLA is deterministic given the clip
      motion = flow
      if motion is None and motion_source == "phase_correlation":
        motion = averaging.motion_magnitudes(frames, boxes)
      stops = averaging.vla_stops(
          frames, boxes=boxes, motion=motion, min_iou=float(cfg.vla_min_iou),
          min_psnr=float(cfg.vla_min_psnr), max_motion=float(cfg.vla_max_motion),
          max_step=float(cfg.vla_max_step), kind=kind, gamma=gamma)
      length_avg = jnp.where(proto == 4, averaging.vla_lengths(stops["any"], l_min, l_max),
                             length_avg)
    weights = averaging.window_weights(length_avg, num_frames)
    averaged = averaging.average_frames(frames, weights, kind, gamma)
    is_avg = proto >= 3
    blurry = jnp.where(is_avg[:, None, None, None], averaged, blurry)
    length = jnp.where(is_avg, length_avg, length)

  if cfg.noise != "none":
    if cfg.noise_in_linear_light:
      linear_blurry = averaging.inverse_response(blurry, kind, gamma)
      blurry = averaging.response(noise.add_noise(k_noise, linear_blurry, cfg), kind, gamma)
    else:
      blurry = noise.add_noise(k_noise, blurry, cfg)
  blurry = jnp.clip(blurry, 0.0, 1.0)
  if cfg.jpeg_prob > 0:
    k_jpeg = jax.vmap(lambda k: jax.random.fold_in(k, 2))(k_noise)
    blurry = jpeg.random_jpeg(k_jpeg, blurry, float(cfg.jpeg_prob), tuple(cfg.jpeg_quality))
  return blurry, sharp, {"kernel": ker, "protocol": proto, "length": length}
