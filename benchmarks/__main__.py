"""Every benchmark behind one command: one markdown table each, printed and written to a file.

    python -m benchmarks --all [--full] [--out benchmarks/results.md]
    python -m benchmarks --only train_step,inference

Benchmarks (each also runs alone: `python -m benchmarks.NAME --help`):
  degrade         on-device blur (jit, batched JAX) vs a per-image NumPy/SciPy loop: ratio
  input_pipeline  grain examples/s with 0..2 worker processes (host CPUs)
  train_step      images/s, step time, GFLOP and MFU (accelerators) of every config's step
  inference       eval-mode generator images/s at 64/128/256: jit vs eager, bf16 vs f32
  vs_pytorch      DeblurGAN generator train step, JAX vs PyTorch eager (needs the [bench] extra)
  profile_step    the same step per operation: each layer kind's forward/backward, JAX vs PyTorch

Each benchmark runs in its own Python process (they set up JAX and grain differently, and grain
workers need a fresh `__main__`), with the small CPU-sized arguments below unless --full is given
(the benchmarks' own, accelerator-sized defaults). Small sizes keep `--all` to a few minutes on a
2-core CPU. Extra arguments for one benchmark: --args NAME="--batch 32 --sizes 128".
"""
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (title, arguments for a quick CPU run, arguments with --full)
BENCHMARKS = {
    "degrade": ("Blur synthesis: JAX (jit, batched) vs NumPy/SciPy reference",
                       ["--batch", "16", "--sizes", "64,128", "--numpy_images", "2"], []),
    "input_pipeline": ("Input pipeline (grain, host CPUs)",
                       ["--sizes=64", "--workers=0,1", "--batch_size=16", "--batches=8"], []),
    # Small: one config per objective and model (fan_luo's gan/lsgan share wgan_gp's networks).
    "train_step": ("Train step (compiled, on-device blur included)",
                   ["--steps", "3", "--configs", "quickstart;quickstart:tiny;chrysos2017:tiny;"
                    "hourglass:tiny;fan_luo:wgan_gp,tiny;chrysos2019:tiny"],
                   ["--full", "--steps", "20"]),
    "inference": ("Inference: eval-mode generator", [], ["--full"]),
    "vs_pytorch": ("DeblurGAN generator train step: JAX vs PyTorch eager (same network, batch)",
                   ["--steps", "5", "--sizes", "64"], ["--sizes", "64,128,256"]),
    "profile_step": ("DeblurGAN generator train step per operation: JAX vs PyTorch eager",
                     ["--ngf", "16", "--size", "64", "--batch", "16", "--repeats", "3"], []),
}


_SEPARATOR = set("|-: ")
_CHATTER = ("Downloading and preparing", "Dataset ", "Generating ", "Shuffling ")  # TFDS


def extract(stdout: str) -> str:
  """The benchmark's last table and its note lines. Table lines are kept even when other output
  falls between them (a dataset built after the header was printed); a benchmark that prints rows
  as it goes and the whole table again at the end (degrade) gives the final copy."""
  lines = stdout.splitlines()
  rows = [l for l in lines if l.startswith("|")]
  starts = [i for i in range(len(rows) - 1) if set(rows[i + 1]) <= _SEPARATOR]
  table = rows[starts[-1]:] if starts else rows
  notes = []
  for line in lines:
    if (line.strip() and not line.startswith("|") and not line.startswith(_CHATTER)
        and line not in notes):
      notes.append(line)
  return "\n".join(notes + ([""] if notes and table else []) + table)


def run_one(name: str, full: bool, extra: list[str]) -> tuple[str, float, int]:
  title, small, big = BENCHMARKS[name]
  cmd = [sys.executable, "-m", f"benchmarks.{name}", *(big if full else small), *extra]
  shown = "python -m " + " ".join(shlex.quote(c) for c in cmd[2:])
  print(f"\n## {title}\n\n`{shown}`\n", flush=True)
  t = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - t
  body = extract(proc.stdout)
  if proc.returncode != 0:
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    body += f"\n\n**failed (exit {proc.returncode})**:\n\n```\n{tail}\n```"
  body += f"\n\n({seconds:.0f} s)"
  print(body, flush=True)
  return f"## {title}\n\n`{shown}`\n\n{body}\n", seconds, proc.returncode


_ALL = flags.DEFINE_bool("all", False, "Run every benchmark.")
_ONLY = flags.DEFINE_list("only", [], f"Comma-separated subset of {', '.join(BENCHMARKS)}.")
_FULL = flags.DEFINE_bool("full", False, "Full sizes (the benchmarks' defaults; accelerators).")
_OUT = flags.DEFINE_string("out", os.path.join("benchmarks", "results.md"),
                           "Markdown file for all tables.")
_ARGS = flags.DEFINE_multi_string("args", [], 'NAME="ARGS": extra arguments for one benchmark, '
                                  'e.g. inference="--sizes 64" (repeatable).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _ALL.value == bool(_ONLY.value):
    raise app.UsageError("give --all or --only NAME[,NAME...]")
  names = list(BENCHMARKS) if _ALL.value else _ONLY.value
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    raise app.UsageError(f"unknown benchmark(s) {', '.join(unknown)}; known: "
                         f"{', '.join(BENCHMARKS)}")
  extra = {}
  for item in _ARGS.value:
    name, _, rest = item.partition("=")
    if name not in BENCHMARKS:
      raise app.UsageError(f"--args {item!r}: unknown benchmark {name!r}")
    extra[name] = shlex.split(rest)

  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  header = (f"# fdeblur benchmarks\n\n{stamp}; {platform.node()}, {platform.machine()}, "
            f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, JAX_PLATFORMS="
            f"{os.environ.get('JAX_PLATFORMS', '') or '(auto)'}; "
            f"{'full' if _FULL.value else 'small (CPU)'} sizes.\n")
  print(header, flush=True)
  sections, failed = [header], []
  for name in names:
    text, _, rc = run_one(name, _FULL.value, extra.get(name, []))
    sections.append(text)
    if rc:
      failed.append(name)
  out = _OUT.value if os.path.isabs(_OUT.value) else os.path.join(os.getcwd(), _OUT.value)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w") as f:
    f.write("\n".join(sections))
  print(f"\nwrote {out}", flush=True)
  if failed:
    sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
  app.run(main)
