"""Entry point: python -m fdeblur.main --config=configs/NAME.py[:variant] --workdir=DIR.

  --mode=train     train (resuming from the workdir's latest checkpoint), then evaluate
  --mode=evaluate  evaluate the workdir's latest checkpoint
  --mode=evaluate --compare=DIR1,DIR2,...  evaluate the latest checkpoints of several workdirs
                   on the same test data and blur; one side-by-side report in --workdir
  --mode=compile [--topology=v5e:4x4] [--per_chip_batch=N] [--fit]  compile the train step for a
                   TPU topology (or the local devices) without touching a device and print
                   its memory, FLOPs, roofline bound and collectives (fdeblur/aot.py; no workdir)
Any config value can be overridden: --config.train.num_steps=100.
"""
import logging as logging_std
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "compile"],
                          "train: train then evaluate; evaluate: latest checkpoint only; "
                          "compile: ahead-of-time compile report of the train step.")
_COMPARE = flags.DEFINE_list(
    "compare", [], "With --mode=evaluate: workdirs whose latest checkpoints are evaluated side by "
    "side (compare.md in --workdir).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 for a multi-process run (jax.distributed)."
    " Empty with --multihost: detect the cluster (Cloud TPU, SLURM, GKE).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (implied "
                               "by --coordinator_address).")
_TOPOLOGY = flags.DEFINE_string("topology", "", "With --mode=compile: a TPU topology "
                                "(v5e:2x2, v5e:4x4, v5p:2x2x2, v6e:16x16, ...); empty: the local "
                                "devices.")
_PER_CHIP_BATCH = flags.DEFINE_integer("per_chip_batch", 0, "With --mode=compile: per-chip batch "
                                       "(0: config.train.batch_size is the global batch); the "
                                       "start of the search with --fit.")
_FIT = flags.DEFINE_bool("fit", False, "With --mode=compile: search the largest per-chip batch "
                         "that fits the chip's HBM.")
flags.mark_flags_as_required(["config"])
flags.register_validator("workdir", lambda v: v is not None or _MODE.value == "compile",
                         "--workdir is required (except with --mode=compile)")


class _QuietLibraries(logging_std.Filter):
  """Keeps orbax's and TFDS's per-file INFO chatter out of the training log."""

  def filter(self, record):
    noisy = ("/orbax/", "/tensorflow_datasets/", "xla_bridge.py")
    return record.levelno >= logging_std.WARNING or not any(n in record.pathname for n in noisy)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Imported here so that --help and flag errors do not pay for importing JAX.
  import jax
  from fdeblur import evaluate, parallel, train

  if _MULTIHOST.value or _COORDINATOR.value:
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

  config = _CONFIG.value
  workdir = _WORKDIR.value
  if _MODE.value == "compile":
    from fdeblur import aot
    try:
      aot.run(config, flags.FLAGS["config"].serialize().partition("=")[2], _TOPOLOGY.value,
              _PER_CHIP_BATCH.value, _FIT.value)
    except ValueError as e:
      sys.exit(f"fdeblur: {e}")
    return
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  if _COMPARE.value:
    if _MODE.value != "evaluate":
      raise app.UsageError("--compare needs --mode=evaluate")
    evaluate.compare(config, _COMPARE.value, workdir)
    if jax.process_index() == 0:
      print(f"comparison: {os.path.join(os.path.abspath(workdir), 'compare.md')}")
    return
  state = None
  if _MODE.value == "train":
    state = train.train(config, workdir)
    if int(state.step) < config.train.num_steps:  # preempted (SIGTERM): checkpoint saved
      logging.warning("Stopped at step %d of %d; rerun the same command to resume.",
                      int(state.step), config.train.num_steps)
      return
  results = evaluate.evaluate(config, workdir, state)
  if jax.process_index() == 0:
    m = results["mean"]
    print(f"PSNR {m['blurred']['psnr']:.2f} dB (blurred) -> {m['deblurred']['psnr']:.2f} dB "
          f"(deblurred); report: {os.path.join(os.path.abspath(workdir), 'report.md')}")


def _parse_flags(argv):
  """absl flag parsing that turns a bad --config.key=value into one clear line, not a
  traceback (ml_collections raises a raw AttributeError for unknown keys)."""
  try:
    remaining = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # a missing file raises only when the config is first used
    return remaining
  except OSError as e:  # the config file is missing or unreadable
    sys.exit(f"fdeblur: --config: {' '.join(str(e).split())}")
  except flags.Error as e:
    text = str(e)
    if "Traceback" in text:  # an exception inside the config file: keep its last line
      head, _, trace = text.partition("Traceback")
      text = head.rstrip(": \n") + ": " + trace.strip().splitlines()[-1]
    sys.exit(f"fdeblur: {text}\nPass --helpfull to see help on flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    key = text.split("'")[1] if text.count("'") >= 2 else ""
    culprit = [a for a in argv[1:] if a.startswith("--config.") and key and key in a]
    where = f" in {culprit[0]}" if culprit else ""
    sys.exit(f"fdeblur: bad config override{where}: {text}")


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
