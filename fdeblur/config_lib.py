"""Defaults every config starts from; the method configs in `configs/` override them.

Conventions: images are float32 in [0, 1], NHWC; sizes are in pixels.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "embedded_faces"  # a TFDS builder registered by input_pipeline.datasets
  c.dataset.data_dir = ""  # "" = TFDS default (~/tensorflow_datasets)
  c.dataset.manual_dir = ""  # for builders that read the user's files
  c.dataset.image_size = 64
  c.dataset.train_split = "train"
  c.dataset.test_split = "test"
  c.dataset.worker_count = 0  # grain worker processes (0 = in the main process)
  c.dataset.prefetch = 2

  # On-device blur (fdeblur.degrade). Each sample draws one protocol with these probabilities.
  c.blur = ml_collections.ConfigDict()
  c.blur.kernel_size = 15  # static support of every kernel (odd)
  c.blur.gaussian_prob = 0.5
  c.blur.gaussian_sigma = (0.5, 2.5)  # isotropic sigma range, pixels
  c.blur.motion_prob = 0.5
  c.blur.motion_length = (3.0, 13.0)  # linear motion length range, pixels
  c.blur.motion_angle = (0.0, 180.0)  # degrees

  c.model = ml_collections.ConfigDict()
  c.model.name = "deblurgan"
  c.model.dtype = "float32"  # computation dtype; parameters are always float32

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16  # global batch over all devices and hosts
  c.train.num_steps = 1000
  c.train.learning_rate = 1e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  c.train.loss = "l1"
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 16
  c.eval.blur_seed = 1234  # fixed blur for evaluation: numbers are comparable across runs
  c.eval.num_sample_rows = 6
  return c
