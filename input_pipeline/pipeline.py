"""grain pipeline: TFDS array_record source -> augment -> batch -> per-process shard -> prefetch.

The pipeline knows nothing about models or blur: it hands uint8 sharp images to the device, where
`fdeblur.degrade` synthesises the blur inside the train step.

Resuming is exact without storing iterator state: the training stream is a random-access
`grain.MapDataset` in which batch `i` is a pure function of (seed, i), so a run restarted at step
`s` reads batches s, s+1, ... as the uninterrupted run would have.
"""
import dataclasses

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline import datasets


def get_builder(cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder `config.dataset` names, at the configured image size."""
  if cfg.name not in datasets.BUILDERS:
    raise ValueError(f"config.dataset.name={cfg.name!r} is not one of {sorted(datasets.BUILDERS)}")
  cls = datasets.BUILDERS[cfg.name]
  name = f"{cfg.image_size}px"
  known = {c.name: c for c in cls.BUILDER_CONFIGS}
  # Any size works: sizes without a predefined config get one made on the fly.
  config = known.get(name) or dataclasses.replace(cls.BUILDER_CONFIGS[0], name=name,
                                                   image_size=cfg.image_size)
  kwargs = {"file_format": "array_record", "config": config}
  if cfg.data_dir:
    kwargs["data_dir"] = cfg.data_dir
  return cls(**kwargs)


def build(cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builds the dataset if it is not on disk yet (idempotent) and returns its builder."""
  builder = get_builder(cfg)
  if not builder.is_prepared():
    logging.info("Building %s into %s", builder.info.full_name, builder.data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=cfg.get("manual_dir") or None)
    builder.download_and_prepare(file_format="array_record", download_config=download_config)
  return builder


def data_source(cfg: ml_collections.ConfigDict, split: str):
  return build(cfg).as_data_source(split=split)


@dataclasses.dataclass(frozen=True)
class KeepImage(grain.transforms.Map):
  """Drops the metadata the device does not need."""

  def map(self, example):
    return {"image": np.asarray(example["image"], np.uint8)}


@dataclasses.dataclass(frozen=True)
class RandomFlip(grain.transforms.RandomMap):
  """Horizontal flip with probability 1/2 (faces are left-right symmetric)."""

  def random_map(self, example, rng: np.random.Generator):
    if rng.uniform() < 0.5:
      example = dict(example, image=np.ascontiguousarray(example["image"][:, ::-1]))
    return example


def train_dataset(cfg: ml_collections.ConfigDict, *, seed: int, local_batch_size: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Infinite random-access stream of this process's batches; item i is the batch of step i."""
  source = data_source(cfg, cfg.train_split)
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[process_index::process_count]  # disjoint per-process shards of every global batch
  ds = ds.map(KeepImage()).random_map(RandomFlip())
  return ds.batch(local_batch_size, drop_remainder=True)


def iterate(ds: grain.MapDataset, start: int, cfg: ml_collections.ConfigDict):
  """Iterator over ds[start:], prefetched by `cfg.worker_count` processes (0 = threads)."""
  it = ds[start:].to_iter_dataset(grain.ReadOptions(prefetch_buffer_size=cfg.prefetch))
  if cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count))
  return iter(it)


def eval_examples(cfg: ml_collections.ConfigDict, split: str | None = None) -> dict:
  """The whole evaluation split in its stored order, as numpy arrays (small by design)."""
  source = data_source(cfg, split or cfg.test_split)
  items = [source[i] for i in range(len(source))]
  if not items:
    raise ValueError(f"split {split or cfg.test_split!r} of {cfg.name} is empty")
  return {
      "image": np.stack([np.asarray(x["image"], np.uint8) for x in items]),
      "source": [x["source"].decode() if isinstance(x["source"], bytes) else str(x["source"])
                 for x in items],
  }
