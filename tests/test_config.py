import os
import subprocess
import sys

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
