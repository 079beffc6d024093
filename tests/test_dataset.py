import collections

import numpy as np

from input_pipeline import pipeline
from input_pipeline.datasets import embedded_faces


def _all(cfg, split):
  src = pipeline.data_source(cfg.dataset, split)
  return [src[i] for i in range(len(src))]


def test_counts_shapes_dtype(tiny_config):
  train, test = _all(tiny_config, "train"), _all(tiny_config, "test")
  size = tiny_config.dataset.image_size
  for ex in train + test:
    assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.uint8
  kinds = collections.Counter(int(ex["kind"]) for ex in train)
  textures = len(embedded_faces.TEXTURES) * embedded_faces.TEXTURE_CROPS
  assert kinds[1] == textures
  train_faces = {ex["source"] for ex in train if int(ex["kind"]) == 0}
  # every training face photograph is stored as TRAIN_JITTERS crops
  assert kinds[0] == len(train_faces) * embedded_faces.TRAIN_JITTERS
  # 103 face photographs ship; the detector finds nearly all of them
  assert 95 <= len(train_faces) + len(test) <= 103
  assert all(int(ex["kind"]) == 0 for ex in test) and 15 <= len(test) <= 21
  assert b"matplotlib/grace_hopper" in {ex["source"] for ex in test}


def test_train_and_test_are_disjoint_by_source_photograph(tiny_config):
  train = {ex["source"] for ex in _all(tiny_config, "train")}
  test = {ex["source"] for ex in _all(tiny_config, "test")}
  assert train and test and not train & test


def test_face_box_lies_inside_the_crop(tiny_config):
  size = tiny_config.dataset.image_size
  for ex in _all(tiny_config, "test"):
    x, y, w, h = ex["box"]
    # the crop is FACE_MARGIN x the box side (less where the photograph ends): the face
    # fills most of it and the box lies inside
    assert size / embedded_faces.FACE_MARGIN - 1 <= max(w, h) <= size
    assert 0 <= x and x + w <= size + 1e-3 and 0 <= y and y + h <= size + 1e-3


def test_train_batches_are_deterministic_and_sharded(tiny_config):
  ds = pipeline.train_dataset(tiny_config.dataset, seed=3, local_batch_size=4)
  a, b = ds[5]["image"], ds[5]["image"]
  assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  # resuming at step s yields the batches an uninterrupted iterator yields from s on
  it = pipeline.iterate(ds, 0, tiny_config.dataset)
  first = [next(it)["image"] for _ in range(3)]
  resumed = next(pipeline.iterate(ds, 2, tiny_config.dataset))["image"]
  np.testing.assert_array_equal(first[2], resumed)
  # two processes read different halves of one global batch
  p0 = pipeline.train_dataset(tiny_config.dataset, seed=3, local_batch_size=4,
                              process_index=0, process_count=2)[0]["image"]
  p1 = pipeline.train_dataset(tiny_config.dataset, seed=3, local_batch_size=4,
                              process_index=1, process_count=2)[0]["image"]
  assert not any(np.array_equal(x, y) for x in p0 for y in p1)


def test_build_is_idempotent(tiny_config):
  before = len(pipeline.data_source(tiny_config.dataset, "train"))
  builder = pipeline.build(tiny_config.dataset)  # already prepared: nothing rebuilt
  assert builder.is_prepared()
  assert len(pipeline.data_source(tiny_config.dataset, "train")) == before
