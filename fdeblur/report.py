"""Evaluation output: report.md (tables), metrics.json, sample grids, CED curves and identity
histograms of one checkpoint (`write_report`) or of several side by side (`write_compare`)."""
import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fdeblur import metrics  # noqa: E402
from fdeblur.face_analysis import ANALYSIS_SIZE  # noqa: E402

ROWS = ("model", "blurred", "oracle")
ROW_LABELS = {"blurred": "blurred input", "oracle": "oracle (sharp)"}


def json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, (np.bool_,)):
    return bool(x)
  return float(x)


def strip_per_image(results):
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


def table(rows, with_faces: bool) -> list[str]:
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
    json.dump(results, f, indent=1, default=json_default)
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
    lines += [f"## {name}: {p['description']}", ""] + table(rows, results["faces"]) + [""]
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


def write_compare(config, out_dir: str, workdirs: list[str], entries: list, write: bool = True):
  """compare.md, compare.json and ced_compare_<p>.png of [(label, results, arrays)] (one per
  workdir) into out_dir (only when `write`: process 0); returns the compare.json content."""
  out = {"checkpoints": [{"workdir": wd, "label": label, "results": strip_per_image(results)}
                         for wd, (label, results, _) in zip(workdirs, entries)]}
  if write:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
      json.dump(out, f, indent=1, default=json_default)
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
      lines += table(rows, first["faces"]) + [""]
      if first["faces"]:
        curves = [("blurred input", entries[0][2][name]["errors"]["blurred"])]
        curves += [(label, arr[name]["errors"]["model"]) for label, _, arr in entries]
        fname = f"ced_compare_{name}.png"
        save_ced(os.path.join(out_dir, fname), curves, f"CED, {name}")
        lines += [f"![CED {name}]({fname})", ""]
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return out


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
