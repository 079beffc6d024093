"""Quick CPU config: the Fan & Luo / DeblurGAN-style generator at 1/4 width, L1 loss, 64px faces
of the embedded dataset; trains in minutes on 2 CPU cores.

Variants: `configs/quickstart.py:tiny` (32px, a few steps; used by the tests).
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "quickstart", ("tiny",))
  c = config_lib.base_config(model="deblurgan")
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
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c)
    c.model.ngf = 4
  return c
