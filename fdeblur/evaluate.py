"""Evaluation as the papers do it: a checkpoint x the test split x blur protocols
(`fdeblur.protocols`), each with a fixed seed, with rows for the model, the blurred input and
the oracle (the sharp image itself) as in Chrysos et al. 2019, Tables 5-6.

Metrics: PSNR and SSIM against the sharp image; with the `[faces]` extra (dlib), also landmark,
identity and detection metrics (`fdeblur.face_analysis`). Settings: config.eval (protocols,
faces: auto | on | off, detector: hog | cnn, batch_size, blur_seed, num_sample_rows).

Writes report.md (tables), metrics.json, samples.png (first protocol) and samples_<p>.png,
ced_<p>.png (CED curves) and identity_<p>.png (`fdeblur.report`).
`compare(config, workdirs, out_dir)` puts several checkpoints side by side in one report.
"""
import copy
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from fdeblur import config_lib, face_analysis, inference, networks, protocols, report
from fdeblur import state as state_lib
from fdeblur.degrade import averaging
from input_pipeline import pipeline


# --- test data ----------------------------------------------------------------------------------

def load_test_data(config) -> dict:
  """{"image" uint8 [N, S, S, 3], "source", optional "box" [N, 4] (x, y, w, h), "landmarks",
  "has_landmarks", and for clip datasets "clips" (frames and corner boxes)}."""
  data = pipeline.eval_examples(config.dataset)
  length = protocols.clip_length(config)
  if length > 1:
    source = pipeline.source_for(config.dataset, config.dataset.test_split)
    limit = config.dataset.eval_max_examples or min(len(source), 64)
    idx = np.linspace(0, len(source) - 1, min(limit, len(source))).round().astype(int)
    decode = pipeline.Decode()
    items = [decode.map(source[int(i)]) for i in idx]
    clips = {"frames": np.stack([x["frames"] for x in items])}
    if "box" in items[0]:
      clips["boxes"] = np.asarray(averaging.corner_boxes(np.stack([x["box"] for x in items])))
    mid = averaging.middle_frame(length)
    data = {"image": clips["frames"][:, mid],
            "source": [f"clip {int(i)}" for i in idx], "clips": clips}
    for key in pipeline.GEOMETRY:
      if key in items[0]:
        data[key] = np.stack([x[key][mid] for x in items])
  return data


# --- evaluation ---------------------------------------------------------------------------------

def evaluate_state(config, nets, state, data: dict, use_faces: bool) -> tuple[dict, dict]:
  """(results, arrays) of one checkpoint over every protocol; arrays[protocol] keeps the
  images, landmark errors and identity similarities for the plots."""
  names = protocols.protocols(config)
  predict = inference.Predictor(nets, state, config.eval.batch_size)
  analysis = face_analysis.FaceAnalysis(config, data) if use_faces else None
  sharp_cache = {}
  results = {"step": int(state.step), "num_images": len(data["image"]),
             "blur_seed": config.eval.blur_seed, "protocols": {}, "faces": bool(use_faces)}
  arrays = {}
  for name in names:
    blur = protocols.protocol_blur(config, name)
    if "clips" in data:
      blurry, sharp = inference.blur_test_clips(config, data["clips"], blur)
    else:
      sharp = data["image"].astype(np.float32) / 255.0
      blurry = inference.blur_test_set(config, data["image"], blur)
    deblurred = predict(blurry)
    images = {"model": deblurred, "blurred": blurry, "oracle": sharp}
    rows, per_image, extra = {}, {}, {"images": images}
    for row, img in images.items():
      p, s = inference.per_image(img, sharp)
      per_image[row] = {"psnr": p, "ssim": s}
      rows[row] = {"psnr": float(p.mean()), "ssim": float(s.mean())}
    if analysis is not None:
      if sharp_cache.get("sharp") is None or not np.array_equal(sharp_cache["sharp"], sharp):
        sharp_cache.update(sharp=sharp, analysis=analysis.analyse(sharp))
      sharp_an = sharp_cache["analysis"]
      gt = analysis.ground_truth(sharp_an)
      extra["errors"], extra["identity"] = {}, {}
      for row, img in images.items():
        an = sharp_an if row == "oracle" else analysis.analyse(img)
        summary, err, ident = face_analysis.face_rows(an, gt, sharp_an["embedding"])
        rows[row].update(summary)
        per_image[row].update({"landmark_error": err, "identity": ident,
                               "detected": an["detected"]})
        extra["errors"][row], extra["identity"][row] = err, ident
    results["protocols"][name] = {"description": protocols.describe(config, name), "rows": rows,
                                  "per_image": per_image}
    arrays[name] = extra
    logging.info("evaluation %s: PSNR %.2f -> %.2f dB", name, rows["blurred"]["psnr"],
                 rows["model"]["psnr"])
  # The first protocol's per-image numbers in the historical layout (training validation,
  # main.py and older readers use "mean" and "per_image").
  first = results["protocols"][names[0]]
  pi = first["per_image"]
  results["protocol"] = names[0]
  results["mean"] = {"blurred": {"psnr": first["rows"]["blurred"]["psnr"],
                                 "ssim": first["rows"]["blurred"]["ssim"]},
                     "deblurred": {"psnr": first["rows"]["model"]["psnr"],
                                   "ssim": first["rows"]["model"]["ssim"]}}
  results["per_image"] = [
      {"index": i, "source": data["source"][i], "psnr_blurred": pi["blurred"]["psnr"][i],
       "ssim_blurred": pi["blurred"]["ssim"][i], "psnr_deblurred": pi["model"]["psnr"][i],
       "ssim_deblurred": pi["model"]["ssim"][i]} for i in range(len(data["image"]))]
  return results, arrays


def evaluate(config: ml_collections.ConfigDict, workdir: str, state=None) -> dict:
  """Evaluates `state` (or the workdir's latest checkpoint) and writes the report."""
  if state is None:
    nets, state = state_lib.restore_for_evaluation(config, workdir)
  else:
    nets = networks.Networks.generator(config)
  data = load_test_data(config)
  results, arrays = evaluate_state(config, nets, state, data, face_analysis.enabled(config))
  if jax.process_index() == 0:
    report.write_report(config, workdir, results, arrays)
  m = results["mean"]
  logging.info("Evaluation at step %d on %d images: PSNR %.2f -> %.2f dB, SSIM %.4f -> %.4f",
               results["step"], results["num_images"], m["blurred"]["psnr"],
               m["deblurred"]["psnr"], m["blurred"]["ssim"], m["deblurred"]["ssim"])
  return results


# --- comparing checkpoints ----------------------------------------------------------------------

def config_for(config, workdir: str) -> ml_collections.ConfigDict:
  """The workdir's own config.json (its model) with `config`'s dataset, blur and eval, so that
  every compared checkpoint sees the same test images and blur."""
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    return config
  own = config_lib.from_workdir(workdir)
  for section in ("dataset", "blur", "eval"):
    setattr(own, section, copy.deepcopy(getattr(config, section)))
  return own


def compare(config, workdirs: list[str], out_dir: str) -> dict:
  """Evaluates the latest checkpoint of every workdir on the same data and blur and writes one
  report (compare.md, compare.json, ced_compare_<p>.png) into out_dir."""
  if not workdirs:
    raise ValueError("compare: no workdirs given")
  data = load_test_data(config)
  use_faces = face_analysis.enabled(config)
  entries = []
  for wd in workdirs:
    cfg = config_for(config, wd)
    nets, state = state_lib.restore_for_evaluation(cfg, wd)
    results, arrays = evaluate_state(cfg, nets, state, data, use_faces)
    label = f"{os.path.basename(os.path.normpath(wd))} ({cfg.model.name}, step {results['step']})"
    entries.append((label, results, arrays))
  return report.write_compare(config, out_dir, workdirs, entries, jax.process_index() == 0)
