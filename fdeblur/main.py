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
import os

from absl import app, flags, logging
from ml_collections import config_flags

from fdeblur import errors

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


def main(argv):
  try:
    _main(argv)
  except errors.UserError as e:
    errors.exit_with("fdeblur", e)


def check_paths(mode: str, workdir: str, compare: list[str]) -> None:
  """Before any work (nothing is created here): train writes into --workdir (made once the
  dataset is checked too); evaluate reads a checkpoint there and writes its report."""
  if mode == "train":
    errors.ensure_writable_dir(workdir, "--workdir", create=False)
    return
  for wd in compare or [workdir]:
    if not errors.is_remote(wd) and not os.path.isdir(os.path.join(wd, "checkpoints")):
      flag = "--compare" if compare else "--workdir"
      what = "no such folder" if not os.path.isdir(wd) else "no checkpoints/ in it"
      raise errors.NoCheckpoint(f"{flag} {wd}: no checkpoint to evaluate ({what}): train "
                                "there first (--mode=train), or check the path")
  errors.ensure_writable_dir(workdir, "--workdir")  # the report (compare: created if missing)


def _main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  errors.quiet_library_logs()
  if _MODE.value != "compile":  # compile reads no data and writes nothing
    check_paths(_MODE.value, _WORKDIR.value, _COMPARE.value)
    from input_pipeline import pipeline  # (imports TFDS: after the cheap checks)
    pipeline.validate(_CONFIG.value.dataset)  # the dataset can be read or built
  if _MODE.value == "train":
    errors.ensure_writable_dir(_WORKDIR.value, "--workdir")  # now made
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
    except ValueError as e:  # a bad --topology / --per_chip_batch: one line, exit 2
      raise errors.UsageError(str(e)) from None
    return
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  if _COMPARE.value:
    if _MODE.value != "evaluate":
      raise errors.UsageError("--compare needs --mode=evaluate")
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
    errors.exit_with("fdeblur", errors.UsageError(f"--config: {e}"))
  except flags.Error as e:
    text = str(e)
    if "Traceback" in text:  # an exception inside the config file: keep its last line
      head, _, trace = text.partition("Traceback")
      text = head.rstrip(": \n") + ": " + trace.strip().splitlines()[-1]
    errors.exit_with("fdeblur", errors.UsageError(f"{text} (see --helpfull)"))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    key = text.split("'")[1] if text.count("'") >= 2 else ""
    culprit = [a for a in argv[1:] if a.startswith("--config.") and key and key in a]
    where = f" in {culprit[0]}" if culprit else ""
    errors.exit_with("fdeblur", errors.UsageError(f"bad config override{where}: {text}"))


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
