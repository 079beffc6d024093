"""The config schema: every key any code reads, with its default. Method configs in `configs/`
start from `base_config(model=..., discriminator=...)` and change values; the returned config is
locked, so a misspelt or unknown key (in a config file, a test or `--config.a.b=...`) is an error,
not a silently ignored setting. `config.model` / `config.discriminator` are the constructor
options of the model the config names (`fdeblur.models.model_config`).

`load("configs/NAME.py:variant,tiny")` loads a config file as `--config=` does;
`from_workdir(dir)` the config a run saved in `dir/config.json` (over today's defaults).

Conventions: images are float32 in [0, 1], NHWC; sizes are in pixels.
"""
import importlib.util
import json
import os

import ml_collections
from absl import logging


def base_config(model: str = "deblurgan", discriminator: str = "") -> ml_collections.ConfigDict:
  """The defaults, with the options of generator `model` and discriminator `discriminator`
  ("" = none). Locked: values can change, keys cannot be added."""
  from fdeblur import models  # pylint: disable=import-outside-toplevel  (imports flax)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.mesh_shape = ()  # () = 1-D `data` mesh over all devices; (replicas, data) for a 2-D mesh

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "embedded_faces"  # a TFDS builder registered by input_pipeline.datasets
  c.dataset.data_dir = ""  # "" = TFDS default (~/tensorflow_datasets)
  c.dataset.manual_dir = ""  # for builders that read the user's files
  c.dataset.image_size = 64
  c.dataset.train_split = "train"
  c.dataset.test_split = "test"
  c.dataset.worker_count = 0  # grain worker processes (0 = in the main process)
  c.dataset.prefetch = 2
  c.dataset.log_every = 200  # log examples/s every this many batches (0 = never)
  c.dataset.eval_max_examples = 0  # evenly spaced subset of the test split (0 = all; clips: 64)
  c.dataset.clip_length = 1  # > 1: clips of T consecutive frames (video datasets)
  c.dataset.clip_stride = 1  # every clip_stride-th frame of a run
  # Face box side (px) in the training images, for the deblur command's --scale=train; 0 = the
  # face crops' image_size / margin. Set it for models trained on patches of whole photographs.
  c.dataset.face_size = 0.0
  # Train-time augmentation, identical for all frames of a clip (input_pipeline.pipeline.Augment).
  c.dataset.flip = True
  c.dataset.scale_jitter = 0.05
  c.dataset.translate_jitter = 0.03  # fraction of the size
  c.dataset.rotate_jitter = 0.0  # degrees
  c.dataset.colour_jitter = 0.1
  c.dataset.enlarge_prob = 0.0  # share of examples enlarged (a random square resized up)
  c.dataset.enlarge_max = 2.0  # largest enlargement factor
  # Options of the face builders (input_pipeline.datasets: FaceConfig, FaceVideosConfig; the
  # defaults are theirs). Non-default values name a separate builder config (its own build).
  c.dataset.margin = 1.6  # crop side / face box side (also the crop geometry of evaluate, deblur)
  c.dataset.test_fraction = 0.1
  c.dataset.split_salt = ""
  c.dataset.image_format = "png"
  c.dataset.jpeg_quality = 95
  c.dataset.min_face = 24
  c.dataset.min_votes = 0  # detections: cascade votes at least (0 = the cascades' thresholds)
  c.dataset.face_check = "eyes"  # landmark check of detections: eyes | none
  c.dataset.temporal_smoothing = 8.0
  c.dataset.max_frames = 0
  # embedded_photos (input_pipeline.datasets.embedded_photos.EmbeddedPhotosConfig; defaults theirs)
  c.dataset.face_patches = 12  # jittered patches per face and scale
  c.dataset.random_patches = 16  # random patches per photograph and scale
  c.dataset.photo_dir = ""  # extra photographs (embedded_photos): faces found get face patches
  # Face width (px, detector box) the model was trained at; the deblur command scales faces to it
  # (0 = image_size / margin: crops squeezed to the training size, as face-crop datasets train).
  c.dataset.face_size = 0.0

  # On-device blur (fdeblur.degrade). Each sample draws one protocol with these probabilities
  # (normalised; pravg/vla apply to clip batches only and are dropped for image batches).
  c.blur = ml_collections.ConfigDict()
  c.blur.kernel_size = 15  # static support of Gaussian and motion kernels (odd)
  c.blur.gaussian_prob = 0.5
  c.blur.gaussian_sigma = (0.5, 2.5)  # sigma range, pixels (each axis when anisotropic)
  c.blur.gaussian_anisotropic_prob = 0.0  # share of Gaussian draws with independent sigma_x/y
  c.blur.gaussian_angle = (0.0, 180.0)  # rotation of anisotropic Gaussians, degrees
  c.blur.motion_prob = 0.5
  c.blur.motion_length = (3.0, 13.0)  # linear motion length range, pixels
  c.blur.motion_angle = (0.0, 180.0)  # degrees
  # Random camera-shake trajectories (Boracchi & Foi 2012; defaults of DeblurGAN's blur script).
  # The PSF support is the canvas made odd (64 -> 65); small images want a smaller canvas and
  # max_len. With trajectory_prob > 0 every kernel of the batch has that support.
  c.blur.trajectory_prob = 0.0
  c.blur.trajectory_canvas = 64
  c.blur.trajectory_iters = 2000
  c.blur.trajectory_max_len = 60.0  # path length, pixels
  c.blur.trajectory_anxiety = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003, 0.002, 0.001)
  c.blur.trajectory_fractions = (1 / 1000, 1 / 10, 1 / 2, 1.0)  # exposure fractions
  c.blur.trajectory_fraction_probs = (0.25, 0.25, 0.25, 0.25)  # DeblurGAN: uniform part 0..3
  c.blur.trajectory_center = "exposure"  # or "trajectory" (the reference: whole-path box)
  # (lo, hi) pixels: each exposed path is rescaled (its shape kept) so that its bounding box's
  # longer side is U(lo, hi): blur extents that match the working resolution. (0, 0) = as drawn.
  c.blur.trajectory_extent = (0.0, 0.0)
  c.blur.sharp_prob = 0.0  # share of kernel samples left sharp (a delta kernel)
  # Applying kernels: direct convolution below this kernel size, FFT from it on; 0 = by backend
  # (CPU: always FFT, XLA's grouped convolution is slow there; GPU: FFT from 21; TPU: never).
  c.blur.fft_min_kernel_size = 0
  c.blur.border = "reflect"  # reflect | symmetric | edge
  # Frame averaging over clips {"frames": [B, T, H, W, C]} (Chrysos et al. 2019).
  c.blur.pravg_prob = 0.0
  c.blur.pravg_lengths = (7, 9, 11, 15, 21)  # PrAvg(L), the paper's L
  c.blur.vla_prob = 0.0
  c.blur.vla_length = (3, 21)  # (L_min, L_max), odd; L_max is capped by the clip length
  c.blur.vla_min_iou = 0.5  # stop: face boxes of first and last frame overlap less
  c.blur.vla_min_psnr = 24.0  # stop: running average vs middle frame below this, dB
  c.blur.vla_motion = "phase_correlation"  # or "none"; a batch's "flow" [B, T-1] takes precedence
  c.blur.vla_max_motion = 0.15  # stop: motion summed over the window > this * min(H, W)
  c.blur.vla_max_step = 0.05  # stop: one frame pair's motion > this * min(H, W)
  # Camera response psi-hat: averaging (and optionally kernel blur, noise) in linear light.
  c.blur.camera_response = "gamma"  # gamma | srgb | none
  c.blur.camera_gamma = 2.2
  c.blur.kernels_in_linear_light = False  # DeblurGAN and the 2017 paper blur display values
  # Sensor noise after the blur.
  c.blur.noise = "none"  # none | gaussian | poisson_gaussian
  c.blur.noise_sigma = (0.0, 0.02)  # Gaussian (read) noise std range, [0, 1] units
  c.blur.noise_peak = (100.0, 1000.0)  # Poisson: photons at white
  c.blur.noise_poisson_exact = False  # True: real Poisson draws (slow); False: normal approx.
  c.blur.noise_in_linear_light = True
  # JPEG after blur and noise, on the device (fdeblur.degrade.jpeg): share of samples, quality.
  c.blur.jpeg_prob = 0.0
  c.blur.jpeg_quality = (30, 90)

  # What a step optimises (fdeblur.objectives): supervised | gan | chrysos2019.
  c.objective = "supervised"
  c.loss = ml_collections.ConfigDict()
  c.loss.pixel = "l1"  # l1 | l2 | huber | psnr
  c.loss.pixel_weight = 1.0
  c.loss.psnr_floor = 1e-4  # pixel=psnr: MSE below which an image weighs no more (losses.psnr)
  c.loss.gradient_weight = 0.0  # L1 of image gradients (2019: λcg)
  c.loss.perceptual_weight = 0.0  # VGG19 features (DeblurGAN: 100)
  c.loss.adversarial_weight = 1.0
  c.loss.projection_weight = 0.0  # discriminator penultimate features (2019: λp)
  c.loss.reconstruction_weight = 0.0  # G_s(I_s) vs I_s (2019: λr)
  c.gan = ml_collections.ConfigDict()
  c.gan.kind = "gan"  # gan (non-saturating) | lsgan | wgan_gp
  c.gan.n_critic = 1  # discriminator updates per generator update
  c.gan.gp_weight = 10.0  # WGAN-GP penalty weight
  c.gan.conditional = False  # discriminator also sees the blurry input (always for chrysos2019)
  c.discriminator = models.discriminator_config(discriminator)  # name "" = none
  c.perceptual = ml_collections.ConfigDict()
  c.perceptual.weights = ""  # local VGG19 file (.npz or torchvision .pth); "random" for tests
  c.perceptual.layer = "conv3_3"

  c.model = models.model_config(model)  # dtype: computation; parameters are always float32

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 16  # global batch over all devices and hosts
  c.train.num_steps = 1000
  c.train.learning_rate = 1e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  c.train.optimizer = "adam"  # adam | sgd | rmsprop
  c.train.momentum = 0.0  # sgd
  c.train.schedule = "constant"  # constant | cosine | step | linear_decay
  c.train.decay_steps = 1  # step: multiply by decay_factor every decay_steps
  c.train.decay_factor = 1.0
  c.train.decay_start = 0  # linear_decay: constant until this step
  c.train.warmup_steps = 0  # linear ramp of the learning rate from 0 before the schedule
  c.train.ema_decay = 0.0  # > 0 keeps an EMA of the generator, used for evaluation
  # Fine-tuning: an exported weights folder (`python -m fdeblur.weights`; "default" = the shipped
  # face model) whose generator starts a fresh run (not a resume: step, optimiser and EMA start
  # anew from it). Its network must be the config's.
  c.train.init_from = ""
  # ... into a wider network (more channels, e.g. a larger model.ngf): the stored weights fill
  # the leading channels, the new ones start unconnected (weights.widen), so the wider network
  # starts as the narrow one.
  c.train.init_grow = False
  # Log the 10th/50th/90th percentile of the batch's blurred-input PSNR: they need the
  # per-sample values of every device (small all-gathers), so only configs that ask for them.
  c.train.log_blur_percentiles = False
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.keep_checkpoints = 3
  # Divergence watch (fdeblur/divergence.py): stop | warn | off. Diverged = for `patience` steps
  # the loss stays above factor x its early value (median of the first `warmup` steps), or the
  # gradient norm below grad_floor x its early value; a non-finite loss at once.
  c.train.divergence = "stop"
  c.train.divergence_factor = 10.0
  c.train.divergence_grad_floor = 1e-3
  c.train.divergence_warmup = 10
  c.train.divergence_patience = 20

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 16
  c.eval.blur_seed = 1234  # fixed blur for evaluation: numbers are comparable across runs
  c.eval.every = 5_000  # validation (PSNR/SSIM, image grid, best checkpoint) every N steps; 0 = off
  c.eval.num_validation = 32  # test-split images used for validation
  # Evaluation protocols, comma-separated (training, gaussian, motion, trajectory, pravgL, vla);
  # "" = the training mixture, Gaussian and motion (+ trajectory / PrAvg / VLA where they apply).
  c.eval.protocols = ""
  c.eval.faces = "auto"  # landmark/identity/detection metrics: auto (if dlib) | on | off
  c.eval.detector = "hog"  # dlib detector of the detection metrics: hog | cnn
  c.eval.num_sample_rows = 6
  # The deblur command enlarges a face smaller than the model's face size at most this many
  # times (0: no limit); an enlarged face looks softer than what the model learnt as sharp.
  c.eval.max_enlarge = 0.0
  c.lock()
  return c


def dataset_config(**values) -> ml_collections.ConfigDict:
  """`config.dataset` with `values` set (for scripts and tests that need the data only)."""
  c = base_config().dataset
  for key, value in values.items():
    c[key] = value
  return c


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def _assign(target: ml_collections.ConfigDict, values: dict, where: str, prefix: str = ""):
  for key, value in values.items():
    if key not in target:  # a setting removed since the run (it did nothing then either)
      logging.warning("%s: ignoring %s%s, not a config key any more", where, prefix, key)
      continue
    if isinstance(value, dict):
      _assign(target[key], value, where, f"{prefix}{key}.")
    else:
      target[key] = value


def load(spec: str) -> ml_collections.ConfigDict:
  """"configs/NAME.py[:variant,...]" -> that file's get_config(variant), as --config= loads it."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(
      "fdeblur_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.lock()
  return config


def from_workdir(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in workdir/config.json, over today's defaults (keys added since are
  at their defaults; keys the schema no longer has are ignored with a warning)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir} has no config.json (the run's config)")
  with open(path) as f:
    saved = _tuples(json.load(f))
  config = base_config(saved.get("model", {}).get("name", "deblurgan"),
                       saved.get("discriminator", {}).get("name", ""))
  _assign(config, saved, path)
  return config


def variant_tokens(arg: str, config_name: str, allowed: tuple[str, ...]) -> set[str]:
  """`--config=configs/NAME.py:a,b` passes "a,b": the set of variant tokens, checked."""
  tokens = {t.strip() for t in (arg or "").split(",") if t.strip()}
  unknown = tokens - set(allowed)
  if unknown:
    raise ValueError(f"unknown variant {','.join(sorted(unknown))!r} of {config_name} "
                     f"(known: {', '.join(allowed)})")
  return tokens


def shrink_for_tests(c: ml_collections.ConfigDict, image_size: int = 32) -> None:
  """The `tiny` variant: same code paths and structure, small sizes and few steps."""
  c.dataset.image_size = image_size
  c.blur.kernel_size = 7
  c.blur.gaussian_sigma = (0.5, 1.5)
  c.blur.motion_length = (2.0, 6.0)
  c.blur.trajectory_canvas = 15
  c.blur.trajectory_iters = 64
  c.blur.trajectory_max_len = 8.0
  c.train.batch_size = 8
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.decay_steps = 2
  c.train.decay_start = 2
  c.eval.every = 2
  c.eval.batch_size = 8
  c.eval.num_validation = 8
  c.perceptual.weights = "random"
