"""Evaluation on the test split with a fixed blur seed: PSNR/SSIM of the deblurred output and of
the blurred input against the sharp image, per image and mean; writes report.md, metrics.json and
samples.png (rows of blurred | deblurred | sharp) into the workdir."""
import json
import os

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import logging

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fdeblur import degrade, metrics, networks  # noqa: E402
from input_pipeline import pipeline  # noqa: E402


def blur_test_set(config, sharp_u8: np.ndarray) -> np.ndarray:
  """The evaluation blur: example i always gets the kernel of key fold_in(blur_seed, i)."""
  base = jax.random.PRNGKey(config.eval.blur_seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(len(sharp_u8)))
  sharp = jnp.asarray(sharp_u8, jnp.float32) / 255.0
  blurry, _, _ = jax.jit(lambda k, s: degrade.degrade(k, s, config.blur))(keys, sharp)
  return np.asarray(blurry)


def deblur_batches(config, nets: networks.Networks, state, images: np.ndarray) -> np.ndarray:
  """Runs the eval-mode generator (EMA weights when training keeps them) over images in
  fixed-size batches (the last one padded, so one compilation serves every batch)."""
  params = jax.device_get(networks.inference_params(state))
  model_state = jax.device_get(state.model_state)
  bs = config.eval.batch_size
  outs = []
  for i in range(0, len(images), bs):
    chunk = images[i:i + bs]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], bs - len(chunk), axis=0)])
    outs.append(np.asarray(nets.apply_eval(params, model_state, padded))[:len(chunk)])
  return np.concatenate(outs)


def score(config, nets, state, sharp_u8: np.ndarray):
  """(blurry, deblurred, per-image metrics) of the fixed-seed blur of `sharp_u8`."""
  sharp = sharp_u8.astype(np.float32) / 255.0
  blurry = blur_test_set(config, sharp_u8)
  deblurred = deblur_batches(config, nets, state, blurry)
  psnr_in, ssim_in = _per_image(blurry, sharp)
  psnr_out, ssim_out = _per_image(deblurred, sharp)
  return blurry, deblurred, {"psnr_blurred": psnr_in, "ssim_blurred": ssim_in,
                             "psnr_deblurred": psnr_out, "ssim_deblurred": ssim_out}


def _per_image(pred, target):
  return (np.asarray(metrics.psnr(pred, target), np.float64),
          np.asarray(metrics.ssim(pred, target), np.float64))


def evaluate(config: ml_collections.ConfigDict, workdir: str, state=None) -> dict:
  """Evaluates `state` (or the workdir's latest checkpoint) and writes the report."""
  nets = networks.Networks.generator(config)
  if state is None:
    from fdeblur import train  # pylint: disable=import-outside-toplevel  (train uses this module)
    state = train.restore_for_evaluation(config, workdir)
  data = pipeline.eval_examples(config.dataset)
  sharp = data["image"].astype(np.float32) / 255.0
  blurry, deblurred, m = score(config, nets, state, data["image"])
  psnr_in, ssim_in = m["psnr_blurred"], m["ssim_blurred"]
  psnr_out, ssim_out = m["psnr_deblurred"], m["ssim_deblurred"]
  results = {
      "step": int(state.step),
      "num_images": len(sharp),
      "blur_seed": config.eval.blur_seed,
      "mean": {"blurred": {"psnr": psnr_in.mean(), "ssim": ssim_in.mean()},
               "deblurred": {"psnr": psnr_out.mean(), "ssim": ssim_out.mean()}},
      "per_image": [
          {"index": i, "source": data["source"][i], "psnr_blurred": psnr_in[i],
           "ssim_blurred": ssim_in[i], "psnr_deblurred": psnr_out[i],
           "ssim_deblurred": ssim_out[i]} for i in range(len(sharp))],
  }
  if jax.process_index() == 0:
    write_report(config, workdir, results, blurry, deblurred, sharp)
  m = results["mean"]
  logging.info("Evaluation at step %d on %d images: PSNR %.2f -> %.2f dB, SSIM %.4f -> %.4f",
               results["step"], len(sharp), m["blurred"]["psnr"], m["deblurred"]["psnr"],
               m["blurred"]["ssim"], m["deblurred"]["ssim"])
  return results


def write_report(config, workdir, results, blurry, deblurred, sharp):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(results, f, indent=1, default=float)
  m = results["mean"]
  gain = m["deblurred"]["psnr"] - m["blurred"]["psnr"]
  lines = [
      f"# fdeblur evaluation: {config.model.name} at step {results['step']}", "",
      f"Test split `{config.dataset.test_split}` of `{config.dataset.name}` "
      f"({results['num_images']} images, {config.dataset.image_size}px), blur seed "
      f"{results['blur_seed']} (Gaussian / linear-motion kernels up to "
      f"{config.blur.kernel_size}px).", "",
      "| input to the metric | PSNR (dB) | SSIM |", "|---|---:|---:|",
      f"| blurred input | {m['blurred']['psnr']:.2f} | {m['blurred']['ssim']:.4f} |",
      f"| deblurred ({config.model.name}) | {m['deblurred']['psnr']:.2f} | "
      f"{m['deblurred']['ssim']:.4f} |", "",
      f"Mean PSNR gain: **{gain:+.2f} dB**.", "", "![samples](samples.png)", "",
      "## Per image", "",
      "| # | source | PSNR blurred | PSNR deblurred | SSIM blurred | SSIM deblurred |",
      "|---:|---|---:|---:|---:|---:|"]
  for r in results["per_image"]:
    lines.append(f"| {r['index']} | {r['source']} | {r['psnr_blurred']:.2f} | "
                 f"{r['psnr_deblurred']:.2f} | {r['ssim_blurred']:.4f} | "
                 f"{r['ssim_deblurred']:.4f} |")
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  save_samples(os.path.join(workdir, "samples.png"), blurry, deblurred, sharp, results,
               config.eval.num_sample_rows)


def save_samples(path, blurry, deblurred, sharp, results, rows):
  rows = min(rows, len(sharp))
  fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
  for r in range(rows):
    info = results["per_image"][r]
    for c, (img, title) in enumerate([
        (blurry[r], f"blurred {info['psnr_blurred']:.1f} dB"),
        (deblurred[r], f"deblurred {info['psnr_deblurred']:.1f} dB"),
        (sharp[r], "sharp")]):
      axes[r, c].imshow(np.clip(img, 0, 1))
      axes[r, c].set_title(title, fontsize=8)
      axes[r, c].axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
