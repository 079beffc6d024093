"""Chrysos, Favaro & Zafeiriou 2019, stage 2: the identity-preserving cGAN.

G_bl (blurry ⊕ frozen stage-1 hourglass output) and G_s (sharp input) with ONE shared decoder,
a 5-layer conditional discriminator, loss Eq. 6: L_cGAN + λci·L1 + λcg·L1(∇) + λp·L_p + λr·L_r
with λci = λcg = λr = 100, λp = 8. Training blur: variable-length averaging (VLA) and PrAvg of
consecutive video frames, so the dataset is a face-video one with clips of T frames.

Set `--config.model.hourglass_checkpoint=WORKDIR` to a finished run of configs/hourglass.py.
Optimiser and batch size are not given in the paper: pix2pix's Adam (2e-4, β1 0.5) and batch 16;
60 epochs over the paper's 360k pairs is 1.35M steps.
Variants: `tiny` (tests).
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "chrysos2019", ("tiny",))
  c = config_lib.base_config(model="chrysos2019", discriminator="chrysos2019")
  c.objective = "chrysos2019"
  # c.model.hourglass_checkpoint: workdir of the stage-1 run (required when frozen)
  c.gan.kind = "gan"
  c.loss.pixel = "l1"
  c.loss.pixel_weight = 100.0  # λci
  c.loss.gradient_weight = 100.0  # λcg
  c.loss.reconstruction_weight = 100.0  # λr
  c.loss.projection_weight = 8.0  # λp
  c.loss.adversarial_weight = 1.0
  c.dataset.name = "face_videos"
  c.dataset.image_size = 256
  c.dataset.clip_length = 21  # ≥ the longest window (PrAvg 21, VLA L_max)
  c.blur.gaussian_prob = 0.0
  c.blur.motion_prob = 0.0
  c.blur.pravg_prob = 0.5
  c.blur.vla_prob = 0.5
  c.blur.kernels_in_linear_light = True
  c.train.optimizer = "adam"
  c.train.learning_rate = 2e-4
  c.train.b1 = 0.5
  c.train.batch_size = 16
  c.train.num_steps = 1_350_000
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c, image_size=128)  # 8 stride-2 layers: multiples of 128
    c.model.ngf = 4
    c.model.hg_features = 8
    c.model.hg_stacks = 2
    c.discriminator.ndf = 4
    c.dataset.clip_length = 5
    c.blur.pravg_lengths = (3, 5)
    c.blur.vla_length = (3, 5)
  return c
