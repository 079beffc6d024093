"""Running a trained generator: batched deblurring (`Predictor`), the fixed-seed evaluation blur
of test images and clips, and PSNR/SSIM scoring. Used by training (validation), evaluation and
the deblur command; imports none of them."""
import jax
import jax.numpy as jnp
import numpy as np

from fdeblur import degrade, metrics, networks


class Predictor:
  """The eval-mode generator of `state` (EMA weights when training keeps them) over images of
  any number, in fixed-size batches of `batch_size` (the last one padded, so one compilation
  serves every batch)."""

  def __init__(self, nets: networks.Networks, state, batch_size: int):
    self.nets, self.batch_size = nets, int(batch_size)
    self.params = jax.device_get(networks.inference_params(state))
    self.model_state = jax.device_get(state.model_state)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """float [N, H, W, C] in [0, 1] -> float32 [N, H, W, C]."""
    bs, outs = self.batch_size, []
    for i in range(0, len(images), bs):
      chunk = images[i:i + bs]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], bs - len(chunk), axis=0)])
      outs.append(np.asarray(self.nets.apply_eval(self.params, self.model_state, padded))
                  [:len(chunk)])
    return np.concatenate(outs)


def eval_keys(config, n: int):
  """Example i's blur key: fold_in(PRNGKey(config.eval.blur_seed), i)."""
  base = jax.random.PRNGKey(config.eval.blur_seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def blur_test_set(config, sharp_u8: np.ndarray, blur=None) -> np.ndarray:
  """The evaluation blur: example i always gets the kernel of key fold_in(blur_seed, i).
  `blur`: a config.blur to use instead of the config's (see protocols.protocol_blur)."""
  blur = config.blur if blur is None else blur
  sharp = jnp.asarray(sharp_u8, jnp.float32) / 255.0
  blurry, _, _ = degrade.degrade(eval_keys(config, len(sharp_u8)), sharp, blur)
  return np.asarray(blurry)


def blur_test_clips(config, clips: dict, blur=None):
  """Clips {"frames" uint8 [N, T, H, W, 3], "boxes" [N, T, 4] (x_min, y_min, x_max, y_max)} ->
  (blurry, sharp) float [N, H, W, 3] with the evaluation keys."""
  blur = config.blur if blur is None else blur
  batch = {"frames": jnp.asarray(clips["frames"])}
  if "boxes" in clips:
    batch["boxes"] = jnp.asarray(clips["boxes"], jnp.float32)
  blurry, sharp, _ = degrade.degrade(eval_keys(config, len(clips["frames"])), batch, blur)
  return np.asarray(blurry), np.asarray(sharp)


def per_image(pred, target) -> tuple[np.ndarray, np.ndarray]:
  """(PSNR, SSIM) per image, float64."""
  return (np.asarray(metrics.psnr(pred, target), np.float64),
          np.asarray(metrics.ssim(pred, target), np.float64))


def score(config, predict: Predictor, sharp_u8: np.ndarray, blur=None):
  """(blurry, deblurred, per-image metrics) of the fixed-seed blur of `sharp_u8`."""
  sharp = sharp_u8.astype(np.float32) / 255.0
  blurry = blur_test_set(config, sharp_u8, blur)
  deblurred = predict(blurry)
  psnr_in, ssim_in = per_image(blurry, sharp)
  psnr_out, ssim_out = per_image(deblurred, sharp)
  return blurry, deblurred, {"psnr_blurred": psnr_in, "ssim_blurred": ssim_in,
                             "psnr_deblurred": psnr_out, "ssim_deblurred": ssim_out}
