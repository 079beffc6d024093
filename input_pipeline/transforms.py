"""Host-side degradations as grain transforms (module-level classes, so grain's spawned workers can
pickle them).

The blur itself is synthesised on the device (`fdeblur.degrade`); what belongs on the host is what
JAX cannot do: JPEG compression artefacts, through Pillow's real codec. Use `RandomJpeg` on images
that are already blurred (a pre-blurred dataset, an evaluation set written to disk), or on video
frames before averaging to mimic compressed sources.
"""
import dataclasses
import io

import grain
import ml_collections
import numpy as np
from PIL import Image


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
  """Encodes an [H, W, C] (C = 1 or 3) or [H, W] image as JPEG at `quality` and decodes it.
  uint8 in, uint8 out; float images in [0, 1] are quantised and returned as float32 in [0, 1]."""
  image = np.asarray(image)
  is_float = np.issubdtype(image.dtype, np.floating)
  u8 = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8) if is_float else image.astype(
      np.uint8)
  squeeze = u8.ndim == 3 and u8.shape[-1] == 1
  pil = Image.fromarray(u8[..., 0] if squeeze else u8)
  buf = io.BytesIO()
  pil.save(buf, format="JPEG", quality=int(quality))
  out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil.mode))
  if squeeze:
    out = out[..., None]
  return out.astype(np.float32) / 255.0 if is_float else out


@dataclasses.dataclass(frozen=True)
class RandomJpeg(grain.transforms.RandomMap):
  """With probability `prob`, JPEG-compresses `example[key]` at a quality drawn uniformly from
  [quality[0], quality[1]] (integers, inclusive). Works on one image [H, W, C] or on a stack of
  frames [T, H, W, C] (each frame its own quality draw). Shape and dtype are kept."""
  key: str = "image"
  quality: tuple[int, int] = (30, 90)
  prob: float = 1.0

  def __post_init__(self):
    lo, hi = self.quality
    if not 1 <= lo <= hi <= 95:
      raise ValueError(f"JPEG quality range must satisfy 1 <= lo <= hi <= 95, got {self.quality}")

  @classmethod
  def from_config(cls, blur_cfg: ml_collections.ConfigDict, key: str = "image") -> "RandomJpeg":
    """From `config.blur.jpeg_quality` and `config.blur.jpeg_prob`."""
    return cls(key=key, quality=tuple(int(q) for q in blur_cfg.jpeg_quality),
               prob=float(blur_cfg.jpeg_prob))

  def random_map(self, example, rng: np.random.Generator):
    if self.prob <= 0 or rng.uniform() >= self.prob:
      return example
    x = np.asarray(example[self.key])
    lo, hi = self.quality
    if x.ndim == 4:
      out = np.stack([jpeg_roundtrip(f, rng.integers(lo, hi + 1)) for f in x])
    else:
      out = jpeg_roundtrip(x, rng.integers(lo, hi + 1))
    return dict(example, **{self.key: out.astype(x.dtype)})
