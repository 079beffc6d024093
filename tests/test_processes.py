"""Whole-process behaviour: SIGKILL and restart, SIGTERM in one process and in one of two
jax.distributed processes. (Two-process training is also run through launch/local.sh in
test_launch.py.)"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from conftest import FAST_COMPILE, ROOT

_ENV = dict(os.environ, JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}")


def _cmd(workdir, data_dir, *extra):
  # A finished run ends with the evaluation; without its dlib face metrics (test_evaluate_report's
  # subject), ~20 s of CPU less per finished run.
  return [sys.executable, "-m", "fdeblur.main", "--config=configs/quickstart.py:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", "--mode=train",
          "--config.eval.every=0", "--config.eval.faces=off", *extra]


def _log(workdir):
  """step -> metrics; a step logged twice (before a kill and after the restart) keeps the last."""
  out = {}
  with open(os.path.join(workdir, "train_log.jsonl")) as f:
    for line in f:
      d = json.loads(line)
      out[d["step"]] = d
  return out


def test_sigkill_after_a_checkpoint_then_restart_gives_the_same_losses(data_dir, tmp_path):
  steps = ["--config.train.num_steps=14", "--config.train.log_every=1",
           "--config.train.checkpoint_every=4", "--config.train.schedule=constant"]
  straight = tmp_path / "straight"
  subprocess.run(_cmd(straight, data_dir, *steps), cwd=ROOT, env=_ENV, check=True,
                 capture_output=True, timeout=300)
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cmd(killed, data_dir, *steps), cwd=ROOT, env=_ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (killed / "checkpoints" / "4").exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert (killed / "checkpoints" / "4").exists(), "no checkpoint was written before the kill"
  assert not (killed / "checkpoints" / "14").exists(), "the run finished before the kill"
  subprocess.run(_cmd(killed, data_dir, *steps), cwd=ROOT, env=_ENV, check=True,
                 capture_output=True, timeout=300)
  a, b = _log(straight), _log(killed)
  assert sorted(a) == sorted(b) == list(range(1, 15))
  # the steps logged after checkpoint 4 and before the kill are not listed twice (issue 13)
  with open(killed / "train_log.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, 15))
  for s in range(5, 15):
    np.testing.assert_allclose(b[s]["loss"], a[s]["loss"], rtol=1e-6, err_msg=f"step {s}")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(
      # a constant rate: the same step program as the SIGKILL test's (compiled once per run)
      _cmd(workdir, data_dir, "--config.train.num_steps=100000", "--config.train.log_every=1",
           "--config.train.checkpoint_every=3", "--config.train.schedule=constant"),
      cwd=ROOT, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while not (workdir / "checkpoints" / "3").exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out[-2000:]
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  last = max(_log(workdir))
  assert steps[-1] == last > 3  # the step it stopped at was saved
  assert "rerun the same command to resume" in out
  assert not (workdir / "report.md").exists()  # no evaluation of an unfinished run


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(data_dir, tmp_path):
  """Preemption of one host: JAX's preemption service and orbax's reached_preemption(step) make
  BOTH processes save the same step and stop (neither waits in a collective for the other)."""
  workdir = tmp_path / "two"
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(_ENV, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}")
  procs = [subprocess.Popen(
      _cmd(workdir, data_dir, "--config.train.num_steps=100000", "--config.train.log_every=1",
           "--config.train.checkpoint_every=100000", f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={i}"),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    log = workdir / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
      time.sleep(0.1)
    assert log.exists(), "training did not start"
    procs[1].send_signal(signal.SIGTERM)  # only the second process is preempted
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i}: {out[-3000:]}"
  stopped = [re.findall(r"Stopped at step (\d+) of", out) for out in outs]
  assert all(len(s) == 1 for s in stopped), [o[-1500:] for o in outs]
  step = int(stopped[0][0])
  assert int(stopped[1][0]) == step  # the same step in both
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert saved == [step]  # the preemption checkpoint, written by both together
  assert max(_log(workdir)) == step
