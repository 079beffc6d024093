"""The shipped face model (fdeblur/weights/face_model/, used by `python -m fdeblur.deblur` when no
--checkpoint is given): the Fan & Luo / DeblurGAN generator, trained fully convolutionally on
96 px patches of sharp, full-resolution photographs (`embedded_photos`: faces and natural scenes
at native scale, 3/4 and 1/2; the build never enlarges them). Its model card has the run and the
figures.

Loss: the per-image PSNR loss (`losses.psnr`), not L2: L2 lets the model spoil sharp inputs by a
little (40 -> 38.5 dB on sharp held-out faces) because that costs nothing next to one blurred
image's error. (L1 was tried first: with sensor noise in the inputs its sign gradients on flat
regions outweigh the few edge pixels, and the model stayed at the identity.) The output conv
starts at zero (`zero_head`) and the learning rate ramps up: the untrained model is the identity.

The blur mixture is meant to cover real camera shake at the working resolution, and to leave
sharp inputs alone: 80% Boracchi & Foi trajectories rescaled to an extent of 1-20 px (full
exposure: DeblurGAN's 1/1000 and 1/10 exposure fractions make half its kernels almost a dot),
15% linear motion of 1-20 px, 5% isotropic/anisotropic Gaussians, 25% of all left untouched
(sharp), then Gaussian sensor noise and JPEG at quality 40-95 on 30% of the samples. Stages 1-12
of the shipped weights drew 65/20/15%; stage 13's 80/15/5% gained a little more on blurred faces
and sharpened sharp, soft faces less (model card), presumably because a mild Gaussian (sigma
0.3-2.5) looks like a soft photograph that the model then learns to sharpen. For the same reason
30% of the patches are enlarged up to 3x (bicubic) before the blur: the deblur command enlarges
faces smaller than `face_size`, and stages 14-15 cut the harm to sharp faces with it (model card).

Network choice: ngf 16 (the paper's 64 costs ~16x) with 6 residual blocks and no dropout, 96 px
patches, batch 8: 7,000 steps take about 1.5 h on 2 CPU cores (~15 img/s alone); the shipped
weights continued the run with a warm restart to `--config.train.num_steps=12100` (model card). Faces in the
training patches are ~50-230 px wide (Haar box; median ~110: `dataset.face_size`, the scale the
deblur command brings faces to). On a GPU, train it wider and longer: `--config.model.ngf=64
--config.dataset.image_size=128 --config.train.num_steps=100000`.
Variant `tiny` (32 px, a few steps) for tests.
"""
from fdeblur import config_lib


def get_config(variant: str = ""):
  tokens = config_lib.variant_tokens(variant, "face_model", ("tiny",))
  c = config_lib.base_config(model="deblurgan")
  c.dataset.name = "embedded_photos"
  c.dataset.image_size = 96  # patch size; the model is fully convolutional
  # Resampling blurs the sharp target: flips and colour jitter only.
  c.dataset.scale_jitter = 0.0
  c.dataset.translate_jitter = 0.0
  # ...except enlargement, as the deblur command enlarges faces smaller than face_size: without
  # it the model sharpens the soft look of an enlarged small face (model card, stages 14-15).
  c.dataset.enlarge_prob = 0.3
  c.dataset.enlarge_max = 3.0
  c.dataset.eval_max_examples = 0
  # Median Haar face-box width (px) in the training patches: the deblur command scales faces to it.
  c.dataset.face_size = 110.0
  c.model.update(ngf=16, n_blocks=6, dropout=0.0,  # DeblurGAN's generator at 1/4 width
                 zero_head=True)  # starts as the identity: no harm before it learns

  # What covers real camera shake at the working resolution, and sharp inputs left alone.
  c.blur.update(
      gaussian_prob=0.05, motion_prob=0.15, trajectory_prob=0.8, sharp_prob=0.25,
      kernel_size=21, gaussian_sigma=(0.3, 2.5), gaussian_anisotropic_prob=0.5,
      motion_length=(1.0, 20.0),
      trajectory_canvas=24,  # support 25: room for a 20 px extent
      trajectory_iters=500, trajectory_max_len=20.0, trajectory_extent=(1.0, 20.0),
      trajectory_fractions=(1.0,), trajectory_fraction_probs=(1.0,),
      noise="gaussian", noise_sigma=(0.0, 0.012),
      noise_in_linear_light=False,  # uniform over the tones: dark areas are not noisier
      jpeg_prob=0.3, jpeg_quality=(40, 95))
  c.loss.update(pixel="psnr", gradient_weight=0.0)
  c.train.update(optimizer="adam", learning_rate=5e-4, b1=0.9, schedule="cosine", batch_size=8,
                 warmup_steps=300, num_steps=7000, ema_decay=0.995, log_every=50,
                 checkpoint_every=500, keep_checkpoints=4, log_blur_percentiles=True)
  c.eval.update(every=500, batch_size=8, num_validation=16, protocols="training")
  # The deblur command enlarges small faces at most 2x, though training enlarged up to 3x: on
  # sharp held-out faces of 30 / 40 px, 3x cost -2.94 / -0.70 dB and 2x -0.29 / -0.29 dB, for
  # 0.15 / 0.13 dB less gain on blurred ones (model card, "Small faces").
  c.eval.max_enlarge = 2.0
  if "tiny" in tokens:
    config_lib.shrink_for_tests(c)
    c.model.ngf = 4
    c.model.n_blocks = 1
    c.blur.trajectory_canvas = 15
    c.blur.trajectory_extent = (1.0, 8.0)
  return c
