"""What a dataset build was made from: build_source.json beside the dataset's files.

It records the builder (name, version, config), the manual folder (absolute path) and every file
below it (relative path, size, mtime in ns; hidden files and folders are skipped as the builders
skip them), with a digest of that list. `compare` says how the source a later command names
differs from it, so that a changed folder is never silently ignored.
"""
import hashlib
import json
import os

from fdeblur import errors

SOURCE_NAME = "build_source.json"


def list_files(root: str) -> list[list]:
  """[[relative path, size, mtime_ns]] of the non-hidden files below root, sorted."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      if name.startswith("."):
        continue
      path = os.path.join(dirpath, name)
      try:
        st = os.stat(path)
      except OSError:
        continue
      out.append([os.path.relpath(path, root).replace(os.sep, "/"), st.st_size, st.st_mtime_ns])
  return sorted(out)


def digest(files) -> str:
  return hashlib.sha1(json.dumps(files).encode("utf-8")).hexdigest()


def check_manual_dir(manual_dir: str, dataset: str) -> None:
  """DataError unless manual_dir is a folder holding at least one (non-hidden) file."""
  if not os.path.exists(manual_dir):
    raise errors.DataError(f"--manual_dir {manual_dir}: no such folder (dataset {dataset!r} "
                           "reads your files from it)")
  if not os.path.isdir(manual_dir):
    raise errors.DataError(f"--manual_dir {manual_dir}: not a folder")
  for _, dirnames, filenames in os.walk(manual_dir):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    if any(not f.startswith(".") for f in filenames):
      return
  raise errors.DataError(f"--manual_dir {manual_dir}: the folder holds no files: put your "
                         f"images or videos there (dataset {dataset!r})")


def describe(builder, manual_dir: str | None) -> dict:
  """The source record of a build from manual_dir (None: a builder that reads no files)."""
  record = {"builder": builder.name, "version": str(builder.info.version),
            "config": builder.builder_config.name if builder.builder_config else ""}
  if manual_dir:
    files = list_files(manual_dir)
    record.update(manual_dir=os.path.abspath(manual_dir), num_files=len(files),
                  num_bytes=sum(f[1] for f in files), digest=digest(files), files=files)
  return record


def record(data_dir: str, builder, manual_dir: str | None) -> None:
  with open(os.path.join(data_dir, SOURCE_NAME), "w") as f:
    json.dump(describe(builder, manual_dir), f)


def read(data_dir: str) -> dict | None:
  try:
    with open(os.path.join(data_dir, SOURCE_NAME)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def compare(data_dir: str, builder, manual_dir: str) -> str | None:
  """None when the build in data_dir was made from manual_dir's current files, else what
  differs, as a phrase ('was built from /a, not /b')."""
  old = read(data_dir)
  if old is None or "files" not in old:
    return f"has no readable record of its source ({SOURCE_NAME})"
  if old.get("version") != str(builder.info.version):
    return f"was built by {old.get('builder')} {old.get('version')}"
  now = os.path.abspath(manual_dir)
  files = list_files(manual_dir)
  if old["manual_dir"] != now:
    if old.get("digest") == digest(files):
      return None  # the same files, moved or reached by another path
    return (f"was built from {old['manual_dir']} ({_files(old['num_files'])}), not from "
            f"--manual_dir {now} ({_files(len(files))})")
  if old.get("digest") == digest(files):
    return None
  before = {f[0]: tuple(f[1:]) for f in old["files"]}
  after = {f[0]: tuple(f[1:]) for f in files}
  added = sorted(set(after) - set(before))
  removed = sorted(set(before) - set(after))
  changed = sorted(k for k in set(after) & set(before) if after[k] != before[k])
  example = (added + changed + removed)[:1]
  return (f"was built from {now} before its files changed ({len(added)} added, {len(changed)} "
          f"modified, {len(removed)} removed" + (f", e.g. {example[0]}" if example else "") + ")")


def _files(n: int) -> str:
  return f"{n} file" if n == 1 else f"{n} files"
