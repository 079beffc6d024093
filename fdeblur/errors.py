"""Expected failures: the user can fix them, so they end in one line on stderr (naming the file,
flag or step and what to do) and a distinct exit code, never a traceback. Anything else is a bug
and keeps its traceback.

Exit codes (shared by `fdeblur.main`, `fdeblur.deblur` and `input_pipeline.build`):
  1  nothing was done (deblur: every input was skipped)
  2  bad flag or argument (UsageError)
  3  dataset: not built, source missing/empty/changed, unknown name (DataError)
  4  checkpoint: none, unreadable, or not matching the config (CheckpointError)
  5  a path that must be written is not writable (NotWritable)
  6  an output exists and --overwrite was not given (WouldOverwrite)
  7  training diverged (Diverged)
"""
import errno
import logging
import os
import sys


class UserError(Exception):
  """An expected failure with a one-line message."""
  exit_code = 2

  def __str__(self):
    return " ".join(super().__str__().split())  # always one line


class UsageError(UserError):
  exit_code = 2


class DataError(UserError, ValueError):
  exit_code = 3


class CheckpointError(UserError):
  exit_code = 4


class NoCheckpoint(CheckpointError, FileNotFoundError):
  exit_code = 4


class NotWritable(UserError, OSError):
  exit_code = 5


class WouldOverwrite(UserError):
  exit_code = 6


class Diverged(UserError, FloatingPointError):
  exit_code = 7


def exit_with(prog: str, error: UserError):
  """Prints `prog: error: message` on stderr and exits with the error's code."""
  print(f"{prog}: error: {error}", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(error.exit_code)


def is_remote(path: str) -> bool:
  return "://" in str(path)


def ensure_writable_dir(path: str, flag: str, create: bool = True) -> bool:
  """Creates folder `path` if needed (True when it was created here) and checks that a file can
  be written in it; raises NotWritable naming `flag`. Checked by writing a probe file: `os.access`
  says yes to root even where writing fails (read-only mounts, /proc). create=False: nothing is
  created; a missing `path` is checked in its nearest existing parent. Remote paths (gs://...)
  are left to the library that writes them."""
  if is_remote(path):
    return False
  existed = os.path.isdir(path)
  where = path
  if not create and not existed:
    where = os.path.abspath(path)
    while not os.path.exists(where):
      where = os.path.dirname(where)
  try:
    if create:
      os.makedirs(path, exist_ok=True)
    elif not os.path.isdir(where):
      raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), where)
    probe = os.path.join(where, f".fdeblur_write_test_{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    reason = e.strerror or errno.errorcode.get(e.errno, str(e))
    raise NotWritable(f"{flag} {path}: cannot write there ({reason}): choose another "
                      "folder") from None
  return create and not existed


class QuietLibraries(logging.Filter):
  """Keeps the libraries' chatter out of the log (and off stderr, where an expected failure must
  be one line): orbax and XLA below `level`, TFDS and etils below ERROR (their warnings are
  about folders they probe, e.g. a dataset not built yet, which our own message covers)."""

  NOISY = ("/orbax/", "xla_bridge.py")
  PROBING = ("/tensorflow_datasets/", "/etils/")

  def __init__(self, level: int = logging.WARNING):
    super().__init__()
    self.level = level

  def filter(self, record):
    if any(n in record.pathname for n in self.PROBING):
      return record.levelno >= max(self.level, logging.ERROR)
    return record.levelno >= self.level or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs(level: int = logging.WARNING) -> None:
  """Installs QuietLibraries on absl's handler (call under absl.app.run)."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.get_absl_handler().addFilter(QuietLibraries(level))


def flags_parser(prog: str):
  """An absl `flags_parser` that turns a bad flag into one line and exit code 2."""

  def parse(argv):
    from absl import flags  # pylint: disable=import-outside-toplevel
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      exit_with(prog, UsageError(f"{e} (see --helpfull)"))

  return parse
