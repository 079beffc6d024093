"""Training losses. Images are float in [0, 1]; every loss is a scalar mean over the batch."""
import jax.numpy as jnp
import optax


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def l2(pred, target):
  return jnp.mean(jnp.square(pred - target))


def huber(pred, target, delta: float = 1.0):
  return jnp.mean(optax.losses.huber_loss(pred, target, delta=delta))


PIXEL_LOSSES = {"l1": l1, "l2": l2, "huber": huber}


def pixel_loss(name: str):
  if name not in PIXEL_LOSSES:
    raise ValueError(f"config.train.loss={name!r} is not one of {sorted(PIXEL_LOSSES)}")
  return PIXEL_LOSSES[name]
