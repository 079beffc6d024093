"""Training losses. Images are float in [0, 1]; every loss returns a scalar mean over the batch.

Pixel: L1, L2, Huber (2017), per-image PSNR (the face model). Content terms of 2019: L1 and L1
of image gradients; projection loss on the discriminator's penultimate features; reconstruction
of the identity stream G_s.
Adversarial (Fan & Luo, DeblurGAN): vanilla (non-saturating), LSGAN, WGAN-GP.
"""
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def l2(pred, target):
  return jnp.mean(jnp.square(pred - target))


def huber(pred, target, delta: float = 1.0):
  return jnp.mean(optax.losses.huber_loss(pred, target, delta=delta))


# psnr: the default MSE floor (40 dB): below it an image weighs no more (noise of sigma 0.01 is
# ~40 dB). config.loss.psnr_floor overrides it.
PSNR_FLOOR_MSE = 1e-4


def psnr(pred, target, floor: float = PSNR_FLOOR_MSE):
  """Mean over the images of 10 log10(1 + MSE_i / floor): 40 dB minus each image's PSNR where it
  is far below 40 dB, 0 for a perfect image. The mean PSNR benchmarks report, as a loss: L2 weighs
  an image by its MSE, so a sharp input the model spoils by 0.005 RMS (45 -> 40 dB) costs it
  nothing next to a blurred one at 22 dB; here each image's gradient is scaled by
  1 / (MSE_i + floor), and doing no harm to near-sharp inputs counts as much as deblurring.
  A larger floor (1e-3: 30 dB) gives heavily blurred images more weight next to near-sharp ones."""
  mse = jnp.mean(jnp.square(pred - target), axis=tuple(range(1, pred.ndim)))
  return jnp.mean(10.0 * jnp.log10(1.0 + mse / floor))


PIXEL_LOSSES = {"l1": l1, "l2": l2, "huber": huber, "psnr": psnr}


def pixel_loss(name: str, psnr_floor: float = PSNR_FLOOR_MSE):
  if name not in PIXEL_LOSSES:
    raise ValueError(f"config.loss.pixel={name!r} is not one of {sorted(PIXEL_LOSSES)}")
  if name == "psnr":
    if not psnr_floor > 0:
      raise ValueError(f"config.loss.psnr_floor={psnr_floor!r} must be > 0 (an MSE)")
    return functools.partial(psnr, floor=psnr_floor)
  return PIXEL_LOSSES[name]


def image_gradients(x):
  """Forward differences along y and x of [B, H, W, C] (the ∇ of the 2019 paper's Eq. 3)."""
  return x[:, 1:, :, :] - x[:, :-1, :, :], x[:, :, 1:, :] - x[:, :, :-1, :]


def gradient_l1(pred, target):
  """L1 between image gradients, averaged over both directions."""
  (py, px), (ty, tx) = image_gradients(pred), image_gradients(target)
  return 0.5 * (jnp.mean(jnp.abs(py - ty)) + jnp.mean(jnp.abs(px - tx)))


def projection(features_fake, features_real):
  """2019 Eq. 4: L1 between the discriminator's penultimate features of output and sharp."""
  return jnp.mean(jnp.abs(features_fake - features_real))


# --- adversarial losses -------------------------------------------------------------------------


class GANLoss(NamedTuple):
  discriminator: Callable  # (real_logits, fake_logits) -> scalar
  generator: Callable  # (fake_logits) -> scalar


def _vanilla():
  # Binary cross-entropy on logits; the generator uses the non-saturating form -log D(G(z)).
  d = lambda real, fake: jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
  g = lambda fake: jnp.mean(jax.nn.softplus(-fake))
  return GANLoss(d, g)


def _lsgan(a=0.0, b=1.0, c=1.0):
  # Fan & Luo Def. 3.2 (Mao et al.): fake label a, real label b, generator target c.
  d = lambda real, fake: 0.5 * jnp.mean((real - b) ** 2) + 0.5 * jnp.mean((fake - a) ** 2)
  g = lambda fake: 0.5 * jnp.mean((fake - c) ** 2)
  return GANLoss(d, g)


def _wgan():
  # The critic part of WGAN-GP (Def. 3.3 ii); the gradient penalty is added by the train step.
  d = lambda real, fake: jnp.mean(fake) - jnp.mean(real)
  g = lambda fake: -jnp.mean(fake)
  return GANLoss(d, g)


GAN_LOSSES = {"gan": _vanilla, "lsgan": _lsgan, "wgan_gp": _wgan}


def gan_loss(kind: str) -> GANLoss:
  if kind not in GAN_LOSSES:
    raise ValueError(f"config.gan.kind={kind!r} is not one of {sorted(GAN_LOSSES)}")
  return GAN_LOSSES[kind]()


def gradient_penalty(critic: Callable, real, fake, key):
  """WGAN-GP (Gulrajani et al. 2017): E[(||∇_x̂ D(x̂)||_2 − 1)^2] at x̂ = ε·real + (1−ε)·fake,
  ε ~ U[0, 1] per sample; `critic` maps [B, ...] to per-sample scores [B] or [B, ...]."""
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * jax.lax.stop_gradient(fake)
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))
