"""How dlib's face boxes relate to the Haar cascade's, in which the training data's face sizes and
crops are measured: the constants of fdeblur.faces.TO_HAAR, which let the deblur command bring a
face found by `--detector=hog|cnn` (or by `auto`'s CNN fallback) to the same training scale as a
Haar detection.

    python -m benchmarks.detector_boxes [--photo_dir=DIR] [--scales=1,0.5]

Photographs: the face photographs of the default `embedded_photos` build, plus every photograph
in --photo_dir (the held-out ones excluded by name, as the build does), each at --scales. Haar as
the deblur command runs it (unchecked), HOG (full size, dlib's 2x upsampling), the CNN as the
fallback runs it (fdeblur.faces.detect_cnn_rescaled, unchecked). A pair: one Haar box and one dlib
box whose centres are closer than 0.3 of the dlib box's side (each box in at most one pair).
Prints, per detector, the number of pairs and the median and quartiles of Haar side / dlib side
and of the centre shift (Haar minus dlib) in dlib sides. Needs the [faces] extra.
"""
import os
import sys

import cv2
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MATCH = 0.3  # centre distance / dlib box side below which two boxes are the same face


def pairs(haar_boxes, dlib_boxes):
  """[(haar box, dlib box)]: greedy by centre distance, each box used once."""
  cands = []
  for i, (hx, hy, hw, hh) in enumerate(haar_boxes):
    for j, (dx, dy, dw, dh) in enumerate(dlib_boxes):
      dist = np.hypot(hx + hw / 2 - dx - dw / 2, hy + hh / 2 - dy - dh / 2) / max(dw, dh)
      if dist < MATCH:
        cands.append((dist, i, j))
  used_h, used_d, out = set(), set(), []
  for _, i, j in sorted(cands):
    if i not in used_h and j not in used_d:
      used_h.add(i)
      used_d.add(j)
      out.append((haar_boxes[i], dlib_boxes[j]))
  return out


def relation(haar_box, dlib_box):
  """(Haar side / dlib side, centre shift x, y in dlib sides): the inverse of faces.to_haar_box."""
  hx, hy, hw, hh = haar_box
  dx, dy, dw, dh = dlib_box
  side = max(dw, dh)
  return (max(hw, hh) / side, (hx + hw / 2 - dx - dw / 2) / side,
          (hy + hh / 2 - dy - dh / 2) / side)


def main(argv):
  del argv
  args = flags.FLAGS
  from fdeblur import faces  # pylint: disable=import-outside-toplevel
  from input_pipeline.datasets import embedded_photos  # pylint: disable=import-outside-toplevel
  faces.load()  # fail early with the install hint
  photos = [(n, p) for n, p, kind in embedded_photos.photographs(args.photo_dir)
            if kind != embedded_photos.NATURAL_KIND]
  scales = [float(s) for s in args.scales.split(",")]
  found = {"hog": [], "cnn": []}
  for name, path in photos:
    photo = embedded_photos.read_photo(path)
    for scale in scales:
      image = photo if scale == 1 else cv2.resize(photo, None, fx=scale, fy=scale,
                                                  interpolation=cv2.INTER_AREA)
      haar = [b for b, _ in faces.detect(image, "haar")]
      if not haar:
        continue
      dlib_boxes = {"hog": [b for b, _ in faces.detect(image, "hog")],
                    "cnn": [b for b, _ in faces.detect_cnn_rescaled(image, check=False)[0]]}
      for method, boxes in dlib_boxes.items():
        for h, d in pairs(haar, boxes):
          found[method].append(relation(h, d))
          print(f"{name} x{scale:g} {method}: Haar {[round(v) for v in h]} dlib "
                f"{[round(v) for v in d]}", file=sys.stderr)
  print(f"{len(photos)} photographs at scales {scales}\n")
  print("| detector | pairs | Haar side / dlib side: median (quartiles) | centre shift x | "
        "centre shift y | faces.TO_HAAR now |")
  print("|---|---:|---|---|---|---|")
  for method, rel in found.items():
    if not rel:
      print(f"| {method} | 0 | – | – | – | {faces.TO_HAAR[method]} |")
      continue
    cols = []
    for k in range(3):
      q1, med, q3 = np.percentile([r[k] for r in rel], [25, 50, 75])
      cols.append(f"{med:.3f} ({q1:.3f}–{q3:.3f})")
    print(f"| {method} | {len(rel)} | " + " | ".join(cols) + f" | {faces.TO_HAAR[method]} |")


if __name__ == "__main__":
  flags.DEFINE_string("photo_dir", "", "Also these photographs (as the build's --photo_dir).")
  flags.DEFINE_string("scales", "1,0.5", "Scales at which each photograph is searched.")
  app.run(main)
