import json
import os
import subprocess
import sys

import pytest
from absl import flags

from conftest import ROOT


def _parse(*overrides):
  """Parses flags exactly as `python -m fdeblur.main` does (config_flags reads sys.argv)."""
  from fdeblur import main
  argv = ["prog", f"--config={ROOT}/configs/quickstart.py:tiny", "--workdir=/x", *overrides]
  saved = sys.argv
  try:
    sys.argv = argv
    flags.FLAGS.unparse_flags()
    main._parse_flags(argv)
    return flags.FLAGS.config
  finally:
    sys.argv = saved


def test_override_changes_value_and_type_is_kept():
  cfg = _parse("--config.train.num_steps=7", "--config.train.learning_rate=0.5",
               "--config.model.name=deblurgan")
  assert cfg.train.num_steps == 7
  assert cfg.train.learning_rate == 0.5
  assert _parse().train.num_steps == 4  # the tiny default, untouched


def test_variant_selects_tiny_sizes():
  cfg = _parse()
  assert cfg.dataset.image_size == 32 and cfg.model.ngf == 4


def _main(*args):
  return subprocess.run([sys.executable, "-m", "fdeblur.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_unknown_key_is_a_clear_error_without_traceback(tmp_path):
  r = _main("--config=configs/quickstart.py:tiny", f"--workdir={tmp_path}",
            "--config.train.num_stepz=3")
  assert r.returncode != 0
  assert "num_stepz" in r.stderr and "--config.train.num_stepz" in r.stderr
  assert "Traceback" not in r.stderr
  assert not os.listdir(tmp_path)  # nothing was started


def test_unknown_variant_names_the_file(tmp_path):
  r = _main("--config=configs/quickstart.py:huge", f"--workdir={tmp_path}")
  assert r.returncode != 0
  assert "huge" in r.stderr and "quickstart" in r.stderr
  assert "Traceback" not in r.stderr


def test_missing_config_file_is_named(tmp_path):
  r = _main("--config=configs/no_such_method.py", f"--workdir={tmp_path}")
  assert r.returncode != 0
  assert "no_such_method.py" in r.stderr and "Traceback" not in r.stderr


# --- the schema ---------------------------------------------------------------------------------

CONFIGS = ("quickstart", "chrysos2017", "chrysos2019", "fan_luo", "hourglass")


def _keys(d, prefix=""):
  for k, v in d.items():
    if hasattr(v, "items"):
      yield from _keys(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _other_value(v):
  if isinstance(v, bool):
    return str(not v).lower()
  if isinstance(v, (int, float)):
    return str(v + 1)
  if isinstance(v, tuple):
    return None  # tuples are overridden as a whole in the config file, not on the command line
  return "x" if v == "" else v + "x"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_model_option_is_overridable_from_the_command_line(name):
  from fdeblur import config_lib
  cfg = config_lib.load(f"{ROOT}/configs/{name}.py:tiny")
  for section in ("model", "discriminator"):
    for key, value in _keys(cfg[section]):
      if key == "name" or _other_value(value) is None:
        continue
      new = _parse_named(name, f"--config.{section}.{key}={_other_value(value)}")
      assert new[section][key] != value, (section, key)
  with pytest.raises((AttributeError, KeyError), match="widht"):
    _parse_named(name, "--config.model.widht=3")


def _parse_named(name, *overrides):
  """--config=configs/NAME.py:tiny and overrides, parsed as fdeblur.main defines the flag (own
  FlagValues: absl defines one flag per config key, once per process)."""
  from ml_collections import config_flags
  fv = flags.FlagValues()
  argv = ["prog", f"--config={ROOT}/configs/{name}.py:tiny", *overrides]
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


def test_chrysos2017_width_override_reaches_the_model():
  """The issue's example: it used to fail with "bad config override: width"."""
  from flax import nnx

  from fdeblur import models
  cfg = _parse_named("chrysos2017", "--config.model.width=12", "--config.model.depth=18")
  m = nnx.eval_shape(lambda: models.create(cfg.model, nnx.Rngs(0)))
  assert m.stem.conv.kernel.shape[-1] == 12


def test_configs_are_locked_and_load_matches_the_flag():
  from fdeblur import config_lib
  cfg = config_lib.load(f"{ROOT}/configs/fan_luo.py:wgan_gp,tiny")
  with pytest.raises(AttributeError, match="locked"):
    cfg.blur.jpeg_probability = 0.5  # not a key (blur.jpeg_prob is)
  with pytest.raises(AttributeError, match="locked"):
    config_lib.base_config().train.num_stepz = 3
  flag = _parse_named("fan_luo")
  assert _parse_named("quickstart").to_dict() == config_lib.load(
      f"{ROOT}/configs/quickstart.py:tiny").to_dict()
  assert flag.model.name == "deblurgan"
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.load("configs/nope.py:tiny")


def test_from_workdir_round_trips_the_saved_config(tmp_path):
  from fdeblur import config_lib
  for name in CONFIGS:
    cfg = config_lib.load(f"{ROOT}/configs/{name}.py:tiny")
    (tmp_path / "config.json").write_text(cfg.to_json_best_effort(indent=1))
    back = config_lib.from_workdir(str(tmp_path))
    assert back.to_dict() == cfg.to_dict(), name
  # an old run's config: a key since removed is ignored, a key since added gets its default
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["blur"]["removed_knob"] = 0.0
  del saved["train"]["momentum"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  back = config_lib.from_workdir(str(tmp_path))
  assert back.train.momentum == 0.0 and "removed_knob" not in back.blur
  with pytest.raises(FileNotFoundError, match="config.json"):
    config_lib.from_workdir(str(tmp_path / "nothing"))


def test_builder_options_are_the_builders_defaults():
  import dataclasses

  from fdeblur import config_lib
  from input_pipeline.datasets import common, face_videos
  dataset = config_lib.base_config().dataset
  reserved = common.base_config_fields() | {"image_size"}
  for field in dataclasses.fields(face_videos.FaceVideosConfig):
    if field.name not in reserved:
      assert dataset[field.name] == field.default, field.name


def _code() -> str:
  text = []
  for folder in ("fdeblur", "input_pipeline"):
    for root, _, files in os.walk(os.path.join(ROOT, folder)):
      for f in files:
        if f.endswith(".py") and f != "config_lib.py":
          text.append(open(os.path.join(root, f)).read())
  return "\n".join(text)


def test_every_declared_key_is_read_somewhere():
  """Each key of the schema is read by the code (a key nothing reads is a knob that does
  nothing). Model and discriminator options are read as constructor arguments."""
  import dataclasses
  import re

  from fdeblur import config_lib, models
  from input_pipeline.datasets import face_videos
  code = _code()
  builder = {f.name for f in dataclasses.fields(face_videos.FaceVideosConfig)}
  unread = []
  for name in models.REGISTRY:
    cfg = config_lib.base_config(model=name, discriminator="patchgan")
    for key, _ in _keys(cfg):
      section, _, leaf = key.rpartition(".")
      if section in ("model", "discriminator") and leaf not in dict(
          models.REGISTRY[name].extra):
        continue  # constructor options: models._kwargs passes each to the constructor
      if section == "dataset" and leaf in builder:
        continue  # builder options: pipeline._builder_config reads each dataclass field
      if not re.search(rf"\.{leaf}\b|[\"']{leaf}[\"']", code):
        unread.append(key)
  assert not unread, f"declared but never read: {sorted(set(unread))}"
