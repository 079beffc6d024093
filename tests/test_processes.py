"""Whole-process behaviour: SIGKILL and restart, two-process jax.distributed training."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from conftest import ROOT

_ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "fdeblur.main", "--config=configs/quickstart.py:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", "--mode=train",
          "--config.eval.every=0", *extra]


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
  for s in range(5, 15):
    np.testing.assert_allclose(b[s]["loss"], a[s]["loss"], rtol=1e-6, err_msg=f"step {s}")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_on_one_global_batch(data_dir, tmp_path):
  port = _free_port()
  workdir = tmp_path / "dist"
  procs = [subprocess.Popen(
      _cmd(workdir, data_dir, "--config.train.num_steps=2", "--config.train.log_every=1",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"),
      cwd=ROOT, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  for out in outs:
    assert "process 0 of 2" in out or "process 1 of 2" in out
    assert "mesh of 4 devices" in out  # 2 processes x 2 CPU devices, one global batch
  # Both processes computed the same global step and loss.
  lines = [[l for l in out.splitlines() if "step 2/2" in l][-1] for out in outs]
  loss = [l.split("loss ")[1].split(" ")[0] for l in lines]
  assert loss[0] == loss[1]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(
      _cmd(workdir, data_dir, "--config.train.num_steps=100000", "--config.train.log_every=1",
           "--config.train.checkpoint_every=3"),
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
