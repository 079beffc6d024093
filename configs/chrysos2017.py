"""Chrysos & Zafeiriou 2017, "Deep face deblurring": ResNet without max-pooling with batch-normed
skip connections and a linear map to the image, Huber loss, Gaussian or linear-motion kernels.

Paper's training (Sec. 4): mini-batch 16, SGD, learning rate 3e-4 halved every 15k iterations,
70k iterations. Crop size is not given in the paper; 128 px here.
Variants: `tiny` (tests).
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "chrysos2017", ("tiny",))
  c = config_lib.base_config(model="resnet_deblur")  # paper's depth and widths: the defaults
  c.objective = "supervised"
  c.loss.pixel = "huber"
  c.dataset.image_size = 128
  # "chosen arbitrarily in each step between a Gaussian blur kernel and a motion blur kernel,
  # both with varying deviation and spatial support"
  c.blur.gaussian_prob = 0.5
  c.blur.motion_prob = 0.5
  c.blur.kernel_size = 21
  c.blur.gaussian_sigma = (0.5, 4.0)
  c.blur.motion_length = (3.0, 19.0)
  c.train.batch_size = 16
  c.train.optimizer = "sgd"
  c.train.learning_rate = 3e-4
  c.train.schedule = "step"
  c.train.decay_steps = 15_000
  c.train.decay_factor = 0.5
  c.train.num_steps = 70_000
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c)
    c.model.width = 8
  return c
