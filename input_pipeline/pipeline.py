"""grain pipeline: TFDS array_record source -> (clip sampler) -> decode -> augment -> per-process
shard -> batch -> prefetch (threads or worker processes), with throughput logging.

The pipeline knows nothing about models or blur: it hands uint8 sharp images (or clips of
consecutive frames) and their geometry to the device, where `fdeblur.degrade` synthesises the
blur inside the train step.

Batches (numpy): `image` uint8 [b, S, S, 3]; for clips (`clip_length` T > 1) also `frames` uint8
[b, T, S, S, 3] (`image` is then the middle frame, index (T - 1) // 2, as `degrade` uses). When the dataset stores
geometry: `box` float32 [b, (T,) 4] (x, y, w, h in crop pixels), `landmarks` float32
[b, (T,) 68, 2] (x, y) and `has_landmarks` bool [b, (T,)].

`config.dataset` fields read here (declared with their defaults in fdeblur.config_lib):
  name, data_dir, manual_dir, image_size, train_split, test_split, worker_count, prefetch;
  clip_length (1), clip_stride (1): T frames, every clip_stride-th, from one run of frames;
  flip (True), scale_jitter (0.05), translate_jitter (0.03, fraction of the size),
  rotate_jitter (0.0 degrees), colour_jitter (0.1): train-time augmentation, identical for
  all frames of a clip; landmarks and boxes follow (flip mirrors the 68 points);
  log_every (200): log examples/s every this many batches (0 = never);
  eval_max_examples (0 = all): evenly spaced subset of the test split for evaluation;
  builder options, e.g. margin, test_fraction, split_salt, image_format, temporal_smoothing
  (see input_pipeline/datasets/common.py): non-default values name a separate builder config.

Resuming is exact without storing iterator state: the training stream is a random-access
`grain.MapDataset` in which batch `i` is a pure function of (seed, i), so a run restarted at step
`s` reads batches s, s+1, ... as the uninterrupted run would have, so no iterator state is
checkpointed.
"""
import dataclasses
import math
import os
import shutil
import time

import cv2
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from fdeblur import errors
from fdeblur.degrade.averaging import middle_frame
from input_pipeline import datasets, faces_crop, sources
from input_pipeline.datasets import common

GEOMETRY = ("box", "landmarks", "has_landmarks")


def _builder_config(cls, cfg):
  base = cls.BUILDER_CONFIGS[0]
  reserved = common.base_config_fields() | {"image_size"}
  overrides = {}
  for field in dataclasses.fields(base):
    if field.name in reserved:
      continue
    value = cfg[field.name]
    if value != getattr(base, field.name):
      overrides[field.name] = type(getattr(base, field.name))(value)
  name = common.config_name(cfg.image_size, overrides)
  if name in {c.name for c in cls.BUILDER_CONFIGS}:
    # By name: a builder made with a predefined config object cannot be unpickled in grain's
    # worker processes (TFDS rejects the copy as "a custom config with the same name").
    return name
  # Any size and option works: configs that are not predefined are made on the fly.
  return dataclasses.replace(base, name=name, image_size=cfg.image_size, **overrides)


def get_builder(cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder `config.dataset` names, at the configured image size and options."""
  if cfg.name not in datasets.BUILDERS:
    raise errors.DataError(f"unknown dataset {cfg.name!r} (config.dataset.name / --dataset): "
                           f"use one of {', '.join(sorted(datasets.BUILDERS))}")
  cls = datasets.BUILDERS[cfg.name]
  kwargs = {"file_format": "array_record", "config": _builder_config(cls, cfg)}
  if cfg.data_dir:
    kwargs["data_dir"] = cfg.data_dir
  return cls(**kwargs)


_VERIFIED = set()  # (data_dir, manual_dir) whose source was checked in this process


def _checked(cfg: ml_collections.ConfigDict):
  """(builder, manual_dir, reads_files) after the checks that need no work: DataError for an
  unknown name, a missing or empty manual_dir, or a dataset that reads the user's files, is not
  built and has no manual_dir."""
  builder = get_builder(cfg)
  manual_dir = cfg.manual_dir or None
  reads_files = bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
  if reads_files and manual_dir:
    sources.check_manual_dir(manual_dir, cfg.name)
  if reads_files and not manual_dir and not builder.is_prepared():
    how = builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    raise errors.DataError(
        f"dataset {cfg.name!r} is not built in {os.fspath(builder.data_dir)} and reads your "
        f"files: {how[0].lower()}{how[1:]} (config.dataset.manual_dir when training)")
  return builder, manual_dir, reads_files


def _source_change(builder, manual_dir, reads_files) -> str | None:
  """How the source of a prepared build differs from manual_dir (None: the same, or nothing to
  compare)."""
  if not (reads_files and manual_dir):
    return None
  key = (os.fspath(builder.data_dir), os.path.abspath(manual_dir))
  if key in _VERIFIED:
    return None
  change = sources.compare(key[0], builder, manual_dir)
  if change is None:
    _VERIFIED.add(key)
  return change


def _changed_error(builder, change) -> errors.DataError:
  return errors.DataError(
      f"{builder.info.full_name} in {os.fspath(builder.data_dir)} {change}: rebuild it with "
      "input_pipeline.build --overwrite (deletes that build), or choose another --data_dir")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """What `build` would refuse, checked without building (commands call it before any work)."""
  builder, manual_dir, reads_files = _checked(cfg)
  if builder.is_prepared():
    change = _source_change(builder, manual_dir, reads_files)
    if change is not None:
      raise _changed_error(builder, change)


def build(cfg: ml_collections.ConfigDict, overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds the dataset if it is not on disk yet and returns its builder. The build records its
  source (build_source.json: builder version and config, the manual folder and its files with
  sizes and mtimes); a later call with a manual_dir whose files differ raises DataError, or
  with `overwrite` deletes that build and builds again. Raises DataError (one line) for an
  unknown name, a missing or empty manual_dir, or a build that finds nothing usable."""
  builder, manual_dir, reads_files = _checked(cfg)
  if builder.is_prepared():
    change = _source_change(builder, manual_dir, reads_files)
    if change is None:
      return builder
    if not overwrite:
      raise _changed_error(builder, change)
    logging.warning("Rebuilding %s: it %s", builder.info.full_name, change)
    shutil.rmtree(os.fspath(builder.data_dir))
    builder = get_builder(cfg)
  logging.info("Building %s into %s", builder.info.full_name, builder.data_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(file_format="array_record", download_config=download_config)
  sources.record(os.fspath(builder.data_dir), builder, manual_dir if reads_files else None)
  _VERIFIED.add((os.fspath(builder.data_dir),
                 os.path.abspath(manual_dir) if manual_dir else None))
  return builder


def data_source(cfg: ml_collections.ConfigDict, split: str):
  return build(cfg).as_data_source(split=split)


def build_report(cfg: ml_collections.ConfigDict) -> dict | None:
  """What the build skipped and why (build_report.json beside the data), if the builder wrote one."""
  return common.read_report(get_builder(cfg).data_dir)


def segments(cfg: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """[n, 2] (first record, length) of the runs of consecutive frames of a video dataset."""
  builder = build(cfg)
  meta = builder.info.metadata
  if meta is None or "segments" not in meta or split not in meta["segments"]:
    raise ValueError(f"{cfg.name} stores no frame sequences: clip_length > 1 needs a video "
                     "dataset (face_videos)")
  return np.asarray(meta["segments"][split], np.int64).reshape(-1, 2)


# --- sources ------------------------------------------------------------------------------------

class ClipSource:
  """Random-access source of clips: item k is `length` records, `stride` apart, from one run of
  consecutive frames. Every valid start in every run is one item."""

  def __init__(self, source, segments_: np.ndarray, length: int, stride: int = 1):
    self.source, self.length, self.stride = source, int(length), int(stride)
    span = (self.length - 1) * self.stride + 1
    seg = np.asarray(segments_, np.int64).reshape(-1, 2)
    counts = np.maximum(seg[:, 1] - span + 1, 0)
    keep = counts > 0
    self._first, self._counts = seg[keep, 0], counts[keep]
    self._offsets = np.concatenate([[0], np.cumsum(self._counts)])
    if self._offsets[-1] == 0:
      raise ValueError(f"no run of {span} consecutive frames: lower clip_length/clip_stride")

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def start(self, k: int) -> int:
    k = int(k) % len(self)
    j = int(np.searchsorted(self._offsets, k, side="right")) - 1
    return int(self._first[j] + (k - self._offsets[j]))

  def __getitem__(self, k):
    s = self.start(k)
    return {"frames": [self.source[s + t * self.stride] for t in range(self.length)]}

  def __repr__(self):
    return f"ClipSource(length={self.length}, stride={self.stride}, clips={len(self)})"


# --- transforms (module-level classes: grain workers are spawned and unpickle them) ------------

def _decode_one(example) -> dict:
  out = {"image": common.decode(example["image"])}
  if "landmarks" in example:
    out["landmarks"] = np.asarray(example["landmarks"], np.float32)
    out["has_landmarks"] = np.asarray(example["has_landmarks"], np.bool_)
  if "box" in example:
    out["box"] = np.asarray(example["box"], np.float32)
  return out


@dataclasses.dataclass(frozen=True)
class Decode(grain.transforms.Map):
  """Stored record(s) -> uint8 image (or [T] frames) and float geometry; drops text fields."""

  def map(self, example):
    if "frames" not in example:
      return _decode_one(example)
    frames = [_decode_one(f) for f in example["frames"]]
    out = {"frames": np.stack([f["image"] for f in frames])}
    for key in GEOMETRY:
      if key in frames[0]:
        out[key] = np.stack([f[key] for f in frames])
    return out


def _similarity(size, scale, angle_deg, tx, ty) -> np.ndarray:
  c = (size - 1) / 2.0
  a = math.radians(angle_deg)
  r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  t = np.array([c + tx, c + ty]) - r @ np.array([c, c])
  return np.concatenate([r, t[:, None]], axis=1)


def _enlargement(size, scale, where) -> np.ndarray:
  """Affine map that enlarges the square of side size / scale at relative position `where`
  (x, y in [0, 1]: its offset over the room left) to size x size, pixel centres as
  cv2.resize has them: output u samples input (u + 0.5) / scale - 0.5 + offset."""
  offset = np.asarray(where, np.float64) * (size - size / scale)
  t = scale * (0.5 - offset) - 0.5
  return np.array([[scale, 0.0, t[0]], [0.0, scale, t[1]]])


def _warp(frames, geo, mat, interpolation):
  """[T, H, W, C] frames through the affine `mat` (borders reflected); the landmarks and boxes
  in `geo` are moved with them in place."""
  size = frames.shape[1]
  frames = np.stack([cv2.warpAffine(np.ascontiguousarray(f), mat, (size, size),
                                    flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)
                     for f in frames])
  if "landmarks" in geo:
    geo["landmarks"] = (geo["landmarks"] @ mat[:, :2].T + mat[:, 2]).astype(np.float32)
  if "box" in geo:
    geo["box"] = _boxes_through(geo["box"], mat)
  return frames


def _boxes_through(boxes, mat):
  """[..., 4] boxes -> the axis-aligned boxes around their transformed corners."""
  x, y, w, h = np.moveaxis(boxes, -1, 0)
  corners = np.stack([np.stack([x, y], -1), np.stack([x + w, y], -1),
                      np.stack([x, y + h], -1), np.stack([x + w, y + h], -1)], -2)
  moved = corners @ mat[:, :2].T + mat[:, 2]
  lo, hi = moved.min(-2), moved.max(-2)
  out = np.concatenate([lo, hi - lo], -1).astype(np.float32)
  empty = (w <= 0) & (h <= 0)  # no box (e.g. texture crops) stays all-zero
  return np.where(empty[..., None], 0.0, out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Augment(grain.transforms.RandomMap):
  """Random flip (landmarks mirrored with the 68-point permutation), scale/translation/rotation
  jitter about the crop centre, enlargement, and brightness/contrast/saturation jitter. One
  draw per example: every frame of a clip gets the same transform. For clips, `image` = middle
  frame.

  Enlargement (`enlarge_prob`): a random square of side size / s (s uniform in 1..enlarge_max)
  is resized to the full size by bicubic interpolation, as the deblur command enlarges faces
  smaller than its working size. The target is then an enlarged, soft but unblurred image: a
  model that never saw one sharpens small faces it is given enlarged."""
  flip: bool = True
  scale_jitter: float = 0.05
  translate_jitter: float = 0.03
  rotate_jitter: float = 0.0
  colour_jitter: float = 0.1
  enlarge_prob: float = 0.0
  enlarge_max: float = 2.0

  def random_map(self, example, rng: np.random.Generator):
    clip = "frames" in example
    frames = example["frames"] if clip else example["image"][None]
    size = frames.shape[1]
    out = dict(example)
    geo = {k: example[k] for k in ("box", "landmarks") if k in example}
    if self.flip and rng.uniform() < 0.5:
      frames = frames[:, :, ::-1]
      if "landmarks" in geo:
        lm = geo["landmarks"][..., faces_crop.FLIP_68, :].copy()
        lm[..., 0] = (size - 1) - lm[..., 0]
        geo["landmarks"] = lm
      if "box" in geo:
        b = geo["box"].copy()
        b[..., 0] = np.where(b[..., 2] > 0, (size - 1) - b[..., 0] - b[..., 2], 0.0)
        geo["box"] = b
    s = 1.0 + rng.uniform(-self.scale_jitter, self.scale_jitter) if self.scale_jitter else 1.0
    tx, ty = (rng.uniform(-self.translate_jitter, self.translate_jitter, 2) * size
              if self.translate_jitter else (0.0, 0.0))
    angle = rng.uniform(-self.rotate_jitter, self.rotate_jitter) if self.rotate_jitter else 0.0
    if s != 1.0 or tx or ty or angle:
      frames = _warp(frames, geo, _similarity(size, s, angle, tx, ty), cv2.INTER_LINEAR)
    if self.enlarge_prob and rng.uniform() < self.enlarge_prob:
      mat = _enlargement(size, rng.uniform(1.0, self.enlarge_max), rng.uniform(0, 1, 2))
      frames = _warp(frames, geo, mat, cv2.INTER_CUBIC)
    if self.colour_jitter:
      c = self.colour_jitter
      bright, contrast, sat = rng.uniform(1 - c, 1 + c, 3)
      x = frames.astype(np.float32) * bright
      mean = x.mean(axis=(1, 2, 3), keepdims=True)
      x = (x - mean) * contrast + mean
      gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
      x = gray[..., None] + (x - gray[..., None]) * sat
      frames = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if "landmarks" in geo:
      geo["landmarks"] = np.where(np.asarray(example["has_landmarks"])[..., None, None],
                                  geo["landmarks"], 0.0).astype(np.float32)
    out.update(geo)
    frames = np.ascontiguousarray(frames)
    if clip:
      out["frames"] = frames
      out["image"] = frames[middle_frame(frames.shape[0])]
    else:
      out["image"] = frames[0]
    return out


@dataclasses.dataclass(frozen=True)
class MiddleFrame(grain.transforms.Map):
  """Clips without augmentation: `image` = the middle frame."""

  def map(self, example):
    if "frames" in example:
      example = dict(example, image=example["frames"][middle_frame(example["frames"].shape[0])])
    return example


def augment_from_config(cfg) -> Augment:
  if not 0.0 <= cfg.enlarge_prob <= 1.0 or cfg.enlarge_max < 1.0:
    raise ValueError(f"config.dataset.enlarge_prob must be in [0, 1] and enlarge_max >= 1, got "
                     f"{cfg.enlarge_prob} and {cfg.enlarge_max}")
  return Augment(flip=bool(cfg.flip), scale_jitter=float(cfg.scale_jitter),
                 translate_jitter=float(cfg.translate_jitter),
                 rotate_jitter=float(cfg.rotate_jitter), colour_jitter=float(cfg.colour_jitter),
                 enlarge_prob=float(cfg.enlarge_prob),
                 enlarge_max=float(cfg.enlarge_max))


# --- datasets -----------------------------------------------------------------------------------

def source_for(cfg: ml_collections.ConfigDict, split: str):
  """The random-access source: records, or clips of `clip_length` records."""
  source = data_source(cfg, split)
  length = int(cfg.clip_length)
  if length > 1:
    source = ClipSource(source, segments(cfg, split), length, int(cfg.clip_stride))
  if len(source) == 0:
    raise ValueError(f"split {split!r} of {cfg.name} is empty")
  return source


def example_dataset(cfg: ml_collections.ConfigDict, *, seed: int, split: str | None = None,
                    augment: bool = True) -> grain.MapDataset:
  """Infinite shuffled stream of decoded (and augmented) examples; item i depends on (seed, i)
  only, and epochs are reshuffled."""
  ds = grain.MapDataset.source(source_for(cfg, split or cfg.train_split))
  ds = ds.seed(seed).shuffle().repeat().map(Decode())
  return ds.random_map(augment_from_config(cfg)) if augment else ds.map(MiddleFrame())


def train_dataset(cfg: ml_collections.ConfigDict, *, seed: int, local_batch_size: int,
                  process_index: int = 0, process_count: int = 1, split: str | None = None,
                  augment: bool = True) -> grain.MapDataset:
  """Infinite random-access stream of this process's batches; item i is the batch of step i.
  Process p takes elements p, p + P, p + 2P, ... of the global stream: the P processes read
  disjoint parts of every global batch, and over an epoch together cover the dataset once."""
  ds = example_dataset(cfg, seed=seed, split=split, augment=augment)
  ds = ds[process_index::process_count]
  return ds.batch(local_batch_size, drop_remainder=True)


class LoggedIterator:
  """Wraps a grain iterator: logs examples/s every `every` batches."""

  def __init__(self, iterator, every: int, start: int = 0):
    self._it, self._every, self.start = iterator, every, start
    self._n, self._examples, self._t = 0, 0, time.perf_counter()

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    self._n += 1
    self._examples += len(batch["image"])
    if self._every and self._n % self._every == 0:
      now = time.perf_counter()
      logging.info("input pipeline: %.1f examples/s over the last %d batches",
                   self._examples / max(now - self._t, 1e-9), self._every)
      self._examples, self._t = 0, now
    return batch

  def close(self):
    close = getattr(self._it, "close", None)
    if close:
      close()


def iterate(ds: grain.MapDataset, start: int, cfg: ml_collections.ConfigDict):
  """Iterator over ds[start:], prefetched by `cfg.worker_count` processes (0 = threads)."""
  # Threads beyond the prefetch buffer would idle (grain warns about it): match them.
  it = ds[start:].to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(16, cfg.prefetch)),
                                                    prefetch_buffer_size=cfg.prefetch))
  if cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  return LoggedIterator(iter(it), int(cfg.log_every), start)


def eval_examples(cfg: ml_collections.ConfigDict, split: str | None = None) -> dict:
  """The evaluation split in its stored order (or `eval_max_examples` evenly spaced examples),
  as numpy arrays: `image`, `source`, and the geometry the dataset stores."""
  split = split or cfg.test_split
  source = data_source(cfg, split)
  n = len(source)
  limit = int(cfg.eval_max_examples)
  indices = np.linspace(0, n - 1, limit).round().astype(int) if 0 < limit < n else range(n)
  items = [source[int(i)] for i in indices]
  if not items:
    raise ValueError(f"split {split!r} of {cfg.name} is empty")
  decoded = [_decode_one(x) for x in items]
  out = {
      "image": np.stack([d["image"] for d in decoded]),
      "source": [x["source"].decode() if isinstance(x["source"], bytes) else str(x["source"])
                 for x in items],
  }
  for key in GEOMETRY:
    if key in decoded[0]:
      out[key] = np.stack([d[key] for d in decoded])
  return out
