"""Fan & Luo, GAN face deblurring processor: the DeblurGAN-style generator (7x7 conv, 2 stride-2
convs, 6 residual blocks, 2 transposed convs, output conv) with DeblurGAN's PatchGAN, trained on
random camera-shake trajectory kernels (Boracchi & Foi, as DeblurGAN) with an adversarial loss
and a VGG19 perceptual content loss (λ = 100).

Variants select the GAN type: `gan` (default), `lsgan`, `wgan_gp` (5 critic updates per generator
update, penalty weight 10), plus `tiny` for tests, e.g. `configs/fan_luo.py:wgan_gp,tiny`.
The paper gives no optimiser: DeblurGAN's Adam (1e-4, β1 0.5), batch 1 as DeblurGAN trains,
constant for 150 epochs then linear decay; 256 px crops as the paper. The perceptual loss needs
ImageNet VGG19 weights in a local file: `--config.perceptual.weights=PATH`.
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "fan_luo", ("gan", "lsgan", "wgan_gp", "tiny"))
  kinds = tokens & {"gan", "lsgan", "wgan_gp"}
  if len(kinds) > 1:
    raise ValueError(f"fan_luo: choose one GAN type, got {sorted(kinds)}")
  c = config_lib.base_config(model="deblurgan", discriminator="patchgan")
  c.objective = "gan"
  c.model.ngf = 64
  c.model.n_blocks = 6
  c.model.dropout = 0.5
  c.discriminator.n_layers = 3
  c.discriminator.ndf = 64
  c.gan.kind = kinds.pop() if kinds else "gan"
  c.gan.n_critic = 5 if c.gan.kind == "wgan_gp" else 1
  c.gan.gp_weight = 10.0
  c.discriminator.sigmoid = False  # losses take logits
  c.loss.pixel_weight = 0.0
  c.loss.perceptual_weight = 100.0
  c.loss.adversarial_weight = 1.0
  c.perceptual.weights = ""  # required: a local VGG19 file
  c.dataset.image_size = 256
  c.blur.gaussian_prob = 0.0
  c.blur.motion_prob = 0.0
  c.blur.trajectory_prob = 1.0
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-4
  c.train.b1 = 0.5
  c.train.batch_size = 1
  c.train.schedule = "linear_decay"
  c.train.num_steps = 300_000  # DeblurGAN: 300 epochs of 1000 pairs (Fan & Luo's LFW set)
  c.train.decay_start = 150_000
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c)
    c.model.ngf = 4
    c.discriminator.ndf = 4
    c.train.batch_size = 8
  return c
