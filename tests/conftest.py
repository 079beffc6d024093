import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # configs/ and the packages, also when run from another directory
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# LLVM's optimisations off: XLA's HLO passes, hence the programs the tests check, are the same;
# only their machine code is less optimised. The tests run tiny programs for a few steps, so
# compiling them is most of the suite's time, and large ones (a GAN's generator + critic step)
# compile ~3x faster at -O0. XLA:CPU's older loop emitters instead of its fusion emitters:
# the suite compiles ~2,500 small programs (parameter initialisers, eager ops), and each
# compiles in ~40% less time with them (a random normal's 200 -> 110 ms); the train steps
# compile in about the same time. The subprocesses the tests start inherit both.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
# Every test sees 8 simulated CPU devices, so training runs the sharded path; single-device
# references use a mesh of jax.devices()[:1]. Must be set before JAX is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8 " + FAST_COMPILE).strip()
# One persistent XLA compilation cache per test run, shared by the pytest-xdist workers and by
# the subprocesses the tests start (they inherit this environment): most of the suite's time is
# compiling tiny programs, and the same ones (the shared checkpoint's train step, the evaluation
# step, the blur) would otherwise compile again in every process. The controller (the process
# without PYTEST_XDIST_WORKER) makes a fresh, empty folder before the workers start and removes
# it at the end; a JAX_COMPILATION_CACHE_DIR set from outside is used and kept. Every program
# is cached, however fast it compiled: a subprocess then reads the ~100 small programs of a
# model's initialisation instead of compiling them (-12% CPU in test_processes.py).
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="fdeblur-test-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
  if _OWN_CACHE and not hasattr(config, "workerinput"):
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def load_config(name: str, variant: str = "tiny"):
  """A config file's get_config(variant), as --config=configs/NAME.py:variant loads it."""
  from fdeblur import config_lib
  return config_lib.load(os.path.join(ROOT, "configs", f"{name}.py") + ":" + variant)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """The embedded dataset built once at 32px (tiny configs) for the whole session."""
  path = tmp_path_factory.mktemp("tfds")
  cfg = load_config("quickstart")
  cfg.dataset.data_dir = str(path)
  from input_pipeline import pipeline
  pipeline.build(cfg.dataset)
  return str(path)


@pytest.fixture
def tiny_config(data_dir):
  cfg = load_config("quickstart")
  cfg.dataset.data_dir = data_dir
  return cfg


@pytest.fixture(scope="session")
def video_data_dir(tmp_path_factory):
  """A small `face_videos` dataset: folders of frames of a real face photograph moving along a
  known path (a few px per frame), built once at 128px for the clip-based configs."""
  import numpy as np
  from PIL import Image
  from skimage import data as skdata
  manual = tmp_path_factory.mktemp("videos_manual")
  photo = skdata.astronaut()  # 512x512, face around x 170-270, y 60-170
  for v in range(4):
    folder = manual / f"person{v}" / "frames"
    folder.mkdir(parents=True)
    for t in range(12):
      x0, y0 = 120 + 3 * t + 10 * v, 30 + t
      Image.fromarray(photo[y0:y0 + 200, x0:x0 + 200]).save(folder / f"{t + 1:06d}.png")
  out = tmp_path_factory.mktemp("videos_tfds")
  cfg = load_config("chrysos2019")
  cfg.dataset.data_dir, cfg.dataset.manual_dir = str(out), str(manual)
  from input_pipeline import pipeline
  pipeline.build(cfg.dataset)
  return str(out), str(manual)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, data_dir):
  """(config, workdir) of a quickstart:tiny model trained for 2 steps: a real checkpoint for the
  evaluation and deblur tests."""
  from fdeblur import train
  cfg = load_config("quickstart")
  cfg.dataset.data_dir = data_dir
  cfg.train.num_steps = 2
  cfg.eval.every = 0
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train.train(cfg, workdir)
  return cfg, workdir
