"""Evaluation as the papers do it: a checkpoint x the test split x blur protocols, each with a
fixed seed, with rows for the model, the blurred input and the oracle (the sharp image itself) as
in Chrysos et al. 2019, Tables 5-6.

Metrics: PSNR and SSIM against the sharp image; with the `[faces]` extra (dlib), also the
68-point landmark error normalised by the ground-truth box diagonal (CED, AUC up to 0.08, failure
rate; 2019 Sec. 5.4), the identity cosine similarity of dlib's 128-d embeddings of output and
sharp image (2019 Fig. 11-12) and the face-detection failure rate and mean confidence of dlib's
HOG detector (Fan & Luo Table 1). Ground-truth landmarks are the dataset's where it has them,
else the landmarker's output on the sharp image (so the oracle row is perfect by construction).

Protocols (`config.eval.protocols`, comma-separated; absent or "" = the defaults below):
  training      config.blur as it is (the training mixture)
  gaussian, motion, trajectory   one kernel family only (config.blur's ranges)
  pravg7 ... pravgL              PrAvg(L) frame averaging (clip datasets only)
  vla                            variable-length averaging (clip datasets only)
Defaults: training, gaussian, motion, (trajectory when the config trains on it), and for clip
datasets PrAvg(L) for L in config.blur.pravg_lengths (the paper's 7, 9, 11, 15, 21) that fit in
the clip, and vla. Every protocol blurs example i
with the key fold_in(PRNGKey(config.eval.blur_seed), i).

Other settings read from config.eval when present: faces ("auto" | "dlib" | "none"), detector
("hog" | "cnn": dlib's MMOD detector, slower on CPU).

Writes report.md (tables), metrics.json, samples.png (first protocol) and samples_<p>.png,
ced_<p>.png (CED curves) and identity_<p>.png (cosine-similarity distributions).
`compare(config, workdirs, out_dir)` puts several checkpoints side by side in one report.
"""
import copy
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

PRAVG_LENGTHS = (7, 9, 11, 15, 21)
ANALYSIS_SIZE = 256  # faces are enlarged to this many pixels before dlib sees them
ROWS = ("model", "blurred", "oracle")
ROW_LABELS = {"blurred": "blurred input", "oracle": "oracle (sharp)"}


# --- protocols ----------------------------------------------------------------------------------

def _clip_length(config) -> int:
  return int(config.dataset.get("clip_length", 1) or 1)


def protocols(config) -> list[str]:
  """The protocols of this evaluation, in report order."""
  value = config.eval.get("protocols", "")
  if isinstance(value, str):
    names = [p.strip() for p in value.split(",") if p.strip()]
  else:
    names = [str(p) for p in value]
  clips = _clip_length(config) > 1
  if not names:
    names = ["training", "gaussian", "motion"]
    if config.blur.get("trajectory_prob", 0.0) > 0:
      names.append("trajectory")
    if clips:
      lengths = tuple(config.blur.get("pravg_lengths", PRAVG_LENGTHS) or PRAVG_LENGTHS)
      names += [f"pravg{n}" for n in lengths if n <= _clip_length(config)] + ["vla"]
  for name in names:
    if name not in ("training", "gaussian", "motion", "trajectory", "vla") and not (
        name.startswith("pravg") and name[5:].isdigit()):
      raise ValueError(f"unknown evaluation protocol {name!r} (training, gaussian, motion, "
                       "trajectory, pravgL, vla)")
    if (name == "vla" or name.startswith("pravg")) and not clips:
      raise ValueError(f"protocol {name!r} averages video frames: it needs a clip dataset "
                       "(config.dataset.clip_length > 1)")
    if name.startswith("pravg") and int(name[5:]) > _clip_length(config):
      raise ValueError(f"protocol {name!r} needs clips of at least {name[5:]} frames "
                       f"(config.dataset.clip_length = {_clip_length(config)})")
  return names


def protocol_blur(config, name: str) -> ml_collections.ConfigDict:
  """config.blur with every sample drawn from protocol `name`."""
  blur = copy.deepcopy(config.blur)
  if name == "training":
    return blur
  for key in ("gaussian_prob", "motion_prob", "trajectory_prob", "pravg_prob", "vla_prob"):
    setattr(blur, key, 0.0)
  if name.startswith("pravg"):
    blur.pravg_prob = 1.0
    blur.pravg_lengths = (int(name[5:]),)
  else:
    setattr(blur, f"{name}_prob", 1.0)
  return blur


def _describe(config, name: str) -> str:
  b = config.blur
  if name == "training":
    return "the training mixture (config.blur)"
  if name == "gaussian":
    return f"Gaussian kernels, sigma {tuple(b.gaussian_sigma)} px, support {b.kernel_size}"
  if name == "motion":
    return f"linear motion kernels, length {tuple(b.motion_length)} px"
  if name == "trajectory":
    return (f"camera-shake trajectories (Boracchi & Foi), path {b.trajectory_max_len} px, "
            f"canvas {b.trajectory_canvas}")
  if name == "vla":
    return f"variable-length frame averaging, L in {tuple(b.vla_length)}"
  return f"PrAvg({name[5:]}): average of {name[5:]} consecutive frames"


# --- blur and deblur ----------------------------------------------------------------------------

def _keys(config, n: int):
  base = jax.random.PRNGKey(config.eval.blur_seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def blur_test_set(config, sharp_u8: np.ndarray, blur=None) -> np.ndarray:
  """The evaluation blur: example i always gets the kernel of key fold_in(blur_seed, i).
  `blur`: a config.blur to use instead of the config's (see protocol_blur)."""
  blur = config.blur if blur is None else blur
  sharp = jnp.asarray(sharp_u8, jnp.float32) / 255.0
  blurry, _, _ = degrade.degrade(_keys(config, len(sharp_u8)), sharp, blur)
  return np.asarray(blurry)


def blur_test_clips(config, clips: dict, blur=None):
  """Clips {"frames" uint8 [N, T, H, W, 3], "boxes" [N, T, 4] (x_min, y_min, x_max, y_max)} ->
  (blurry, sharp) float [N, H, W, 3] with the evaluation keys."""
  blur = config.blur if blur is None else blur
  batch = {"frames": jnp.asarray(clips["frames"])}
  if "boxes" in clips:
    batch["boxes"] = jnp.asarray(clips["boxes"], jnp.float32)
  blurry, sharp, _ = degrade.degrade(_keys(config, len(clips["frames"])), batch, blur)
  return np.asarray(blurry), np.asarray(sharp)


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


def score(config, nets, state, sharp_u8: np.ndarray, blur=None):
  """(blurry, deblurred, per-image metrics) of the fixed-seed blur of `sharp_u8`."""
  sharp = sharp_u8.astype(np.float32) / 255.0
  blurry = blur_test_set(config, sharp_u8, blur)
  deblurred = deblur_batches(config, nets, state, blurry)
  psnr_in, ssim_in = _per_image(blurry, sharp)
  psnr_out, ssim_out = _per_image(deblurred, sharp)
  return blurry, deblurred, {"psnr_blurred": psnr_in, "ssim_blurred": ssim_in,
                             "psnr_deblurred": psnr_out, "ssim_deblurred": ssim_out}


def _per_image(pred, target):
  return (np.asarray(metrics.psnr(pred, target), np.float64),
          np.asarray(metrics.ssim(pred, target), np.float64))


# --- test data ----------------------------------------------------------------------------------

def _xywh_to_corners(box):
  box = np.asarray(box, np.float32)
  return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], -1)


def load_test_data(config) -> dict:
  """{"image" uint8 [N, S, S, 3], "source", optional "box" [N, 4] (x, y, w, h), "landmarks",
  "has_landmarks", and for clip datasets "clips" (frames and corner boxes)}."""
  data = pipeline.eval_examples(config.dataset)
  length = _clip_length(config)
  if length > 1:
    source = pipeline.source_for(config.dataset, config.dataset.test_split)
    limit = int(config.dataset.get("eval_max_examples", 0) or 0) or min(len(source), 64)
    idx = np.linspace(0, len(source) - 1, min(limit, len(source))).round().astype(int)
    decode = pipeline.Decode()
    items = [decode.map(source[int(i)]) for i in idx]
    clips = {"frames": np.stack([x["frames"] for x in items])}
    if "box" in items[0]:
      clips["boxes"] = _xywh_to_corners(np.stack([x["box"] for x in items]))
    mid = (length - 1) // 2
    data = {"image": clips["frames"][:, mid],
            "source": [f"clip {int(i)}" for i in idx], "clips": clips}
    for key in pipeline.GEOMETRY:
      if key in items[0]:
        data[key] = np.stack([x[key][mid] for x in items])
  return data


# --- faces (dlib) -------------------------------------------------------------------------------

def _faces_enabled(config) -> bool:
  setting = str(config.eval.get("faces", "auto"))
  if setting in ("none", "off", "false", "False"):
    return False
  from fdeblur import faces  # pylint: disable=import-outside-toplevel
  if setting == "auto":
    ok = faces.available()
    if not ok:
      logging.warning("evaluation without landmark/identity/detection metrics: %s",
                      faces.INSTALL_HINT)
    return ok
  faces.load()  # "dlib": raise the install hint if missing
  return True


def _to_u8(images):
  return np.clip(np.asarray(images, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class FaceAnalysis:
  """dlib on images enlarged to ANALYSIS_SIZE: 68 points in the ground-truth box, the identity
  embedding, and whether the HOG detector finds a face centred inside the ground-truth box."""

  def __init__(self, config, data: dict):
    from fdeblur import faces  # pylint: disable=import-outside-toplevel
    self.dlib = faces.load()
    self.detector = str(config.eval.get("detector", "hog"))
    size = data["image"].shape[1]
    self.scale = max(1.0, ANALYSIS_SIZE / size)
    if "box" in data:
      boxes = np.asarray(data["box"], np.float64)
    else:  # the crop is centred on the face with the dataset's margin
      margin = float(config.dataset.get("margin", 1.6) or 1.6)
      side = size / margin
      boxes = np.tile([(size - side) / 2, (size - side) / 2, side, side], (len(data["image"]), 1))
    self.boxes = boxes * self.scale
    self.gt = None
    if "landmarks" in data and "has_landmarks" in data:
      self.gt_annotated = (np.asarray(data["landmarks"], np.float64) * self.scale,
                           np.asarray(data["has_landmarks"], bool))
    else:
      self.gt_annotated = None

  def _enlarge(self, image_u8):
    if self.scale == 1.0:
      return image_u8
    import cv2  # pylint: disable=import-outside-toplevel
    n = int(round(image_u8.shape[0] * self.scale))
    return cv2.resize(image_u8, (n, n), interpolation=cv2.INTER_CUBIC)

  def analyse(self, images) -> dict:
    pts, emb, det, conf = [], [], [], []
    for img, box in zip(_to_u8(images), self.boxes):
      big = self._enlarge(img)
      pts.append(self.dlib.landmarks(big, box))
      emb.append(self.dlib.embedding(big, box))
      x, y, w, h = box
      found = [s for (bx, by, bw, bh), s in self.dlib.detect(big, self.detector, 0)
               if x <= bx + bw / 2 <= x + w and y <= by + bh / 2 <= y + h]
      det.append(bool(found))
      conf.append(max(found) if found else 0.0)
    return {"landmarks": np.stack(pts), "embedding": np.stack(emb),
            "detected": np.array(det), "confidence": np.array(conf)}

  def ground_truth(self, sharp_analysis) -> np.ndarray:
    gt = sharp_analysis["landmarks"].astype(np.float64)
    if self.gt_annotated is not None:
      points, has = self.gt_annotated
      gt = np.where(has[:, None, None], points, gt)
    return gt


def _face_rows(analysis, gt, sharp_emb) -> dict:
  err = metrics.landmark_error(analysis["landmarks"], gt)
  ident = metrics.cosine_similarity(analysis["embedding"], sharp_emb)
  det = metrics.detection_summary(analysis["detected"], analysis["confidence"])
  lm = metrics.summarize_landmarks(err)
  # 300W's convention (outer-eye-corner distance), for comparison with landmark papers.
  iod = metrics.landmark_error(analysis["landmarks"], gt, "interocular")
  summary = {"landmark_auc": lm["auc"], "landmark_failure": lm["failure_rate"],
             "landmark_error": lm["mean_error"],
             "landmark_error_interocular": float(np.mean(iod[np.isfinite(iod)]))
             if np.isfinite(iod).any() else float("nan"),
             "identity": float(np.nanmean(ident)),
             "detection_failure": det["failure_rate"],
             "detection_confidence": det["mean_confidence"]}
  return summary, err, ident


# --- evaluation ---------------------------------------------------------------------------------

def evaluate_state(config, nets, state, data: dict, use_faces: bool) -> tuple[dict, dict]:
  """(results, arrays) of one checkpoint over every protocol; arrays[protocol] keeps the
  images, landmark errors and identity similarities for the plots."""
  names = protocols(config)
  analysis = FaceAnalysis(config, data) if use_faces else None
  sharp_cache = {}
  results = {"step": int(state.step), "num_images": len(data["image"]),
             "blur_seed": config.eval.blur_seed, "protocols": {}, "faces": bool(use_faces)}
  arrays = {}
  for name in names:
    blur = protocol_blur(config, name)
    if "clips" in data:
      blurry, sharp = blur_test_clips(config, data["clips"], blur)
    else:
      sharp = data["image"].astype(np.float32) / 255.0
      blurry = blur_test_set(config, data["image"], blur)
    deblurred = deblur_batches(config, nets, state, blurry)
    images = {"model": deblurred, "blurred": blurry, "oracle": sharp}
    rows, per_image, extra = {}, {}, {"images": images}
    for row, img in images.items():
      p, s = _per_image(img, sharp)
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
        summary, err, ident = _face_rows(an, gt, sharp_an["embedding"])
        rows[row].update(summary)
        per_image[row].update({"landmark_error": err, "identity": ident,
                               "detected": an["detected"]})
        extra["errors"][row], extra["identity"][row] = err, ident
    results["protocols"][name] = {"description": _describe(config, name), "rows": rows,
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
  nets = networks.Networks.generator(config)
  if state is None:
    from fdeblur import train  # pylint: disable=import-outside-toplevel  (train uses this module)
    state = train.restore_for_evaluation(config, workdir)
  data = load_test_data(config)
  results, arrays = evaluate_state(config, nets, state, data, _faces_enabled(config))
  if jax.process_index() == 0:
    write_report(config, workdir, results, arrays)
  m = results["mean"]
  logging.info("Evaluation at step %d on %d images: PSNR %.2f -> %.2f dB, SSIM %.4f -> %.4f",
               results["step"], results["num_images"], m["blurred"]["psnr"],
               m["deblurred"]["psnr"], m["blurred"]["ssim"], m["deblurred"]["ssim"])
  return results


# --- comparing checkpoints ----------------------------------------------------------------------

def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def config_for(config, workdir: str) -> ml_collections.ConfigDict:
  """The workdir's own config.json (its model) with `config`'s dataset, blur and eval, so that
  every compared checkpoint sees the same test images and blur."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return config
  with open(path) as f:
    own = ml_collections.ConfigDict(_tuples(json.load(f)))
  for section in ("dataset", "blur", "eval"):
    setattr(own, section, copy.deepcopy(getattr(config, section)))
  return own


def compare(config, workdirs: list[str], out_dir: str) -> dict:
  """Evaluates the latest checkpoint of every workdir on the same data and blur and writes one
  report (compare.md, compare.json, ced_compare_<p>.png) into out_dir."""
  from fdeblur import train  # pylint: disable=import-outside-toplevel
  if not workdirs:
    raise ValueError("compare: no workdirs given")
  data = load_test_data(config)
  use_faces = _faces_enabled(config)
  entries = []
  for wd in workdirs:
    cfg = config_for(config, wd)
    state = train.restore_for_evaluation(cfg, wd)
    results, arrays = evaluate_state(cfg, networks.Networks.generator(cfg), state, data,
                                     use_faces)
    label = f"{os.path.basename(os.path.normpath(wd))} ({cfg.model.name}, step {results['step']})"
    entries.append((label, results, arrays))
  out = {"checkpoints": [{"workdir": wd, "label": label, "results": _strip(results)}
                         for wd, (label, results, _) in zip(workdirs, entries)]}
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
      json.dump(out, f, indent=1, default=_json_default)
    first = entries[0][1]
    lines = [f"# fdeblur comparison of {len(entries)} checkpoints", "",
             f"Test split `{config.dataset.test_split}` of `{config.dataset.name}` "
             f"({first['num_images']} images, {config.dataset.image_size}px), blur seed "
             f"{first['blur_seed']}.", ""]
    for name in first["protocols"]:
      rows = [(ROW_LABELS["blurred"], first["protocols"][name]["rows"]["blurred"])]
      rows += [(label, res["protocols"][name]["rows"]["model"]) for label, res, _ in entries]
      rows.append((ROW_LABELS["oracle"], first["protocols"][name]["rows"]["oracle"]))
      lines += [f"## {name}: {first['protocols'][name]['description']}", ""]
      lines += _table(rows, first["faces"]) + [""]
      if first["faces"]:
        curves = [("blurred input", entries[0][2][name]["errors"]["blurred"])]
        curves += [(label, arr[name]["errors"]["model"]) for label, _, arr in entries]
        fname = f"ced_compare_{name}.png"
        save_ced(os.path.join(out_dir, fname), curves, f"CED, {name}")
        lines += [f"![CED {name}]({fname})", ""]
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return out


# --- report -------------------------------------------------------------------------------------

def _json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.bool_,)):
    return bool(x)
  return float(x)


def _strip(results):
  """results without the per-image arrays of every protocol (kept in metrics.json only)."""
  out = dict(results)
  out["protocols"] = {k: {kk: vv for kk, vv in v.items() if kk != "per_image"}
                      for k, v in results["protocols"].items()}
  return out


def _fmt(x, digits):
  if x is None or (isinstance(x, float) and np.isnan(x)):
    return "–"
  if np.isinf(x):
    return "∞"
  return f"{x:.{digits}f}"


def _table(rows, with_faces: bool) -> list[str]:
  head = "| input to the metric | PSNR (dB) | SSIM |"
  rule = "|---|---:|---:|"
  if with_faces:
    head += " landmark AUC@0.08 | landmark failure | identity cos | detection failure | " \
            "detection confidence |"
    rule += "---:|---:|---:|---:|---:|"
  lines = [head, rule]
  for label, r in rows:
    line = f"| {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 4)} |"
    if with_faces:
      line += (f" {_fmt(r['landmark_auc'], 4)} | {_fmt(r['landmark_failure'], 3)} | "
               f"{_fmt(r['identity'], 4)} | {_fmt(r['detection_failure'], 3)} | "
               f"{_fmt(r['detection_confidence'], 3)} |")
    lines.append(line)
  return lines


def write_report(config, workdir, results, arrays):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(results, f, indent=1, default=_json_default)
  model = config.model.name
  names = list(results["protocols"])
  m = results["mean"]
  gain = m["deblurred"]["psnr"] - m["blurred"]["psnr"]
  lines = [
      f"# fdeblur evaluation: {model} at step {results['step']}", "",
      f"Test split `{config.dataset.test_split}` of `{config.dataset.name}` "
      f"({results['num_images']} images, {config.dataset.image_size}px), blur seed "
      f"{results['blur_seed']}; protocols: {', '.join(names)}. Rows as in Chrysos et al. 2019, "
      "Tables 5-6: the model's output, the blurred input and the oracle (the sharp image).", ""]
  if results["faces"]:
    lines += ["Face metrics (dlib, faces enlarged to "
              f"{ANALYSIS_SIZE}px): 68-point error / ground-truth box diagonal, AUC of its CED "
              "up to 0.08 and failure rate (error > 0.08); identity = cosine similarity of the "
              "128-d embeddings of the row's image and the sharp image; detector failure rate "
              "(no face centred in the ground-truth box) and mean confidence of the found faces "
              "(dlib HOG: SVM score; CNN: MMOD confidence). Ground truth = the landmarker on the sharp image "
              "(dataset annotations where present).", ""]
  else:
    lines += ["Face metrics (landmarks, identity, detection) need the `[faces]` extra "
              "(`pip install 'fdeblur[faces]'`).", ""]
  lines += ["## Summary", "", "| protocol | row | PSNR (dB) | SSIM |" +
            (" AUC@0.08 | failure | identity | det. failure | det. conf. |"
             if results["faces"] else ""),
            "|---|---|---:|---:|" + ("---:|---:|---:|---:|---:|" if results["faces"] else "")]
  for name in names:
    for row in ROWS:
      r = results["protocols"][name]["rows"][row]
      label = f"{model}" if row == "model" else ROW_LABELS[row]
      line = f"| {name} | {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 4)} |"
      if results["faces"]:
        line += (f" {_fmt(r['landmark_auc'], 4)} | {_fmt(r['landmark_failure'], 3)} | "
                 f"{_fmt(r['identity'], 4)} | {_fmt(r['detection_failure'], 3)} | "
                 f"{_fmt(r['detection_confidence'], 3)} |")
      lines.append(line)
  lines += ["", f"Mean PSNR gain ({names[0]}): **{gain:+.2f} dB**.", ""]
  for i, name in enumerate(names):
    p = results["protocols"][name]
    rows = [(ROW_LABELS["blurred"], p["rows"]["blurred"]),
            (f"deblurred ({model})", p["rows"]["model"]),
            (ROW_LABELS["oracle"], p["rows"]["oracle"])]
    lines += [f"## {name}: {p['description']}", ""] + _table(rows, results["faces"]) + [""]
    sample_name = "samples.png" if i == 0 else f"samples_{name}.png"
    imgs = arrays[name]["images"]
    save_samples(os.path.join(workdir, sample_name), imgs["blurred"], imgs["model"],
                 imgs["oracle"], p["per_image"], config.eval.num_sample_rows)
    lines += [f"![samples {name}]({sample_name})", ""]
    if results["faces"]:
      save_ced(os.path.join(workdir, f"ced_{name}.png"),
               [(f"deblurred ({model})", arrays[name]["errors"]["model"]),
                ("blurred input", arrays[name]["errors"]["blurred"]),
                ("oracle (sharp)", arrays[name]["errors"]["oracle"])], f"CED, {name}")
      save_identity(os.path.join(workdir, f"identity_{name}.png"),
                    [(f"deblurred ({model})", arrays[name]["identity"]["model"]),
                     ("blurred input", arrays[name]["identity"]["blurred"])],
                    f"identity, {name}")
      lines += [f"![CED {name}](ced_{name}.png) ![identity {name}](identity_{name}.png)", ""]
  lines += [f"## Per image ({names[0]})", "",
            "| # | source | PSNR blurred | PSNR deblurred | SSIM blurred | SSIM deblurred |",
            "|---:|---|---:|---:|---:|---:|"]
  for r in results["per_image"]:
    lines.append(f"| {r['index']} | {r['source']} | {r['psnr_blurred']:.2f} | "
                 f"{r['psnr_deblurred']:.2f} | {r['ssim_blurred']:.4f} | "
                 f"{r['ssim_deblurred']:.4f} |")
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def save_ced(path, curves, title):
  """CED curves [(label, errors)] up to 0.08, AUC in the legend."""
  fig, ax = plt.subplots(figsize=(5, 4))
  for label, errors in curves:
    grid, frac = metrics.ced(errors)
    ax.plot(grid, frac, label=f"{label} (AUC {metrics.auc(errors):.3f})")
  ax.set_xlabel("point error / box diagonal")
  ax.set_ylabel("fraction of images")
  ax.set_xlim(0, metrics.AUC_MAX_ERROR)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title(title)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save_identity(path, series, title):
  """Histograms of cosine similarities [(label, values)] to the sharp image's embedding."""
  fig, ax = plt.subplots(figsize=(5, 4))
  bins = np.linspace(0.5, 1.0, 26)
  for label, values in series:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, alpha=0.5,
            label=f"{label} (mean {v.mean():.3f})" if v.size else label)
  ax.set_xlabel("cosine similarity to the sharp image")
  ax.set_ylabel("images")
  ax.set_title(title)
  ax.legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save_samples(path, blurry, deblurred, sharp, per_image, rows):
  """Rows of blurred | deblurred | sharp; per_image: {"blurred"/"model": {"psnr": [N]}} or the
  historical list of dicts with psnr_blurred / psnr_deblurred."""
  rows = min(rows, len(sharp))
  if isinstance(per_image, dict):
    p_in, p_out = per_image["blurred"]["psnr"], per_image["model"]["psnr"]
  else:
    p_in = [r["psnr_blurred"] for r in per_image]
    p_out = [r["psnr_deblurred"] for r in per_image]
  fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
  for r in range(rows):
    for c, (img, title) in enumerate([
        (blurry[r], f"blurred {p_in[r]:.1f} dB"),
        (deblurred[r], f"deblurred {p_out[r]:.1f} dB"),
        (sharp[r], "sharp")]):
      axes[r, c].imshow(np.clip(img, 0, 1))
      axes[r, c].set_title(title, fontsize=8)
      axes[r, c].axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
