"""Quick CPU config: the Fan & Luo / DeblurGAN-style generator at reduced width, L1 loss, 64px
faces of the embedded dataset; trains in minutes on 2 CPU cores.

Variants: `configs/quickstart.py:tiny` (32px, a few steps; used by the tests).
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  c = config_lib.base_config()
  c.model.name = "deblurgan"
  c.model.ngf = 16  # DeblurGAN: 64
  c.model.n_blocks = 6  # structure as in the paper
  c.model.dropout = 0.0
  c.train.batch_size = 16
  c.train.num_steps = 1200
  c.train.learning_rate = 1e-3
  c.train.schedule = "cosine"
  c.train.log_every = 50
  c.train.checkpoint_every = 400
  c.eval.every = 400
  if variant == "tiny":
    c.dataset.image_size = 32
    c.blur.kernel_size = 7
    c.blur.motion_length = (2.0, 6.0)
    c.blur.gaussian_sigma = (0.5, 1.5)
    c.model.ngf = 4
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.eval.every = 2
    c.eval.batch_size = 8
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of quickstart (known: tiny)")
  return c
