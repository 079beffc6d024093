"""Chrysos, Favaro & Zafeiriou 2019, stage 1: the stacked hourglass (Newell et al. 2016) trained
alone on kernel blur ("random camera-shake kernels"), later frozen inside configs/chrysos2019.py.

The paper gives no optimiser for this stage; Newell et al.'s RMSProp at 2.5e-4 is used, with an
L1 image loss. 256 px inputs as every sub-network of the paper.
Variants: `tiny` (tests).
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "hourglass", ("tiny",))
  c = config_lib.base_config(model="hourglass")  # n_stacks 8, features 256, depth 4
  c.objective = "supervised"
  c.loss.pixel = "l1"
  c.dataset.image_size = 256
  c.blur.gaussian_prob = 0.0
  c.blur.motion_prob = 0.0
  c.blur.trajectory_prob = 1.0  # camera-shake kernels
  c.train.optimizer = "rmsprop"
  c.train.learning_rate = 2.5e-4
  c.train.batch_size = 16
  c.train.num_steps = 200_000
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c, image_size=64)  # the hourglass needs multiples of 64
    c.model.features = 8
    c.model.n_stacks = 2
  return c
