"""launch/: the scripts parse, fail early naming a missing variable (never reaching gcloud, kubectl
or srun), the JobSet renders to valid YAML, and local.sh runs a real 2-process x 2-device training."""
import os
import re
import shutil
import subprocess
import sys
import types

import pytest
import yaml

from conftest import ROOT

LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["local.sh", "tpu_vm.sh", "gke.sh", "slurm.sbatch"]
BASH = shutil.which("bash")


def _empty_env_run(script, env=None, *args, path=""):
  """The script under an empty environment; PATH="" so that no external tool can be reached."""
  return subprocess.run([BASH, os.path.join(LAUNCH, script), *args], env={"PATH": path, **(env or {})},
                        cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_every_launch_file_parses():
  found = sorted(f for f in os.listdir(LAUNCH) if f.endswith((".sh", ".sbatch")))
  assert set(SCRIPTS) <= set(found)
  for name in found:
    r = subprocess.run([BASH, "-n", os.path.join(LAUNCH, name)], capture_output=True, text=True)
    assert r.returncode == 0, f"{name}: {r.stderr}"
  with open(os.path.join(LAUNCH, "gke_jobset.yaml")) as f:
    jobset = yaml.safe_load(f)
  assert jobset["kind"] == "JobSet" and jobset["apiVersion"].startswith("jobset.x-k8s.io/")
  pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
  assert "--process_id=$(JOB_COMPLETION_INDEX)" in pod["containers"][0]["args"]


@pytest.mark.parametrize("script,env,missing", [
    ("local.sh", {}, "CONFIG"),
    ("local.sh", {"CONFIG": "configs/quickstart.py:tiny"}, "WORKDIR"),
    ("tpu_vm.sh", {}, "TPU_NAME"),
    ("tpu_vm.sh", {"TPU_NAME": "t", "ZONE": "z", "CONFIG": "c"}, "WORKDIR"),
    ("slurm.sbatch", {}, "CONFIG"),
    ("slurm.sbatch", {"CONFIG": "c"}, "WORKDIR"),
    ("gke.sh", {}, "IMAGE"),
    ("gke.sh", {"IMAGE": "i", "CONFIG": "c", "WORKDIR": "gs://b/w", "NUM_WORKERS": "2",
                "ACCELERATOR": "tpu"}, "TPU_ACCELERATOR"),
])
def test_a_missing_variable_fails_early_and_names_it(script, env, missing):
  r = _empty_env_run(script, env)
  assert r.returncode != 0
  assert missing in r.stderr, r.stderr


def test_workers_without_shared_storage_are_refused():
  r = _empty_env_run("tpu_vm.sh", {"TPU_NAME": "t", "ZONE": "z", "CONFIG": "c",
                                   "WORKDIR": "/tmp/run"})
  assert r.returncode != 0 and "gs://" in r.stderr
  r = _empty_env_run("slurm.sbatch", {"CONFIG": "c", "WORKDIR": "/shared/run"})
  assert r.returncode != 0 and "sbatch" in r.stderr  # not inside a SLURM job: srun not reached


def test_gke_jobset_renders_for_tpu_and_gpu(tmp_path):
  bin_dir = tmp_path / "bin"  # only what the dry run needs: no kubectl
  bin_dir.mkdir()
  for tool, target in (("python3", sys.executable), ("dirname", shutil.which("dirname"))):
    os.symlink(target, bin_dir / tool)
  base = {"IMAGE": "img:1", "CONFIG": "configs/fan_luo.py:wgan_gp,tiny", "WORKDIR": "gs://b/run",
          "NUM_WORKERS": "4", "DRY_RUN": "1", "DATA_DIR": "gs://b/tfds"}
  tpu = dict(base, ACCELERATOR="tpu", TPU_ACCELERATOR="tpu-v5-lite-podslice", TPU_TOPOLOGY="4x4")
  gpu = dict(base, ACCELERATOR="gpu", GPU_TYPE="nvidia-h100-80gb")
  for env, resource, chips in ((tpu, "google.com/tpu", 4), (gpu, "nvidia.com/gpu", 8)):
    r = _empty_env_run("gke.sh", env, "--config.train.batch_size=64", path=str(bin_dir))
    assert r.returncode == 0, r.stderr
    jobset = yaml.safe_load(r.stdout)
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 4
    pod = job["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {resource: chips}
    assert pod["containers"][0]["args"] == [
        "--config=configs/fan_luo.py:wgan_gp,tiny", "--workdir=gs://b/run",
        "--coordinator_address=fdeblur-workers-0-0.fdeblur:8476", "--num_processes=4",
        "--process_id=$(JOB_COMPLETION_INDEX)", "--config.dataset.data_dir=gs://b/tfds",
        "--config.train.batch_size=64"]


def _local(workdir, *args, timeout=600):
  env = dict(os.environ, CONFIG="configs/quickstart.py:tiny", WORKDIR=str(workdir),
             NUM_PROCESSES="2", DEVICES_PER_PROCESS="2", PYTHON=sys.executable)
  return subprocess.run([BASH, os.path.join(LAUNCH, "local.sh"), *args], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_local_sh_two_processes_two_devices_train_one_global_batch(data_dir, tmp_path):
  workdir = tmp_path / "run"
  # (the evaluation ending the run without its dlib face metrics: ~20 s of CPU per process)
  r = _local(workdir, f"--config.dataset.data_dir={data_dir}", "--config.eval.every=0",
             "--config.eval.faces=off",
             "--config.train.num_steps=2", "--config.train.log_every=1",
             "--config.train.checkpoint_every=100")
  out = r.stdout + r.stderr
  assert r.returncode == 0, out[-4000:]
  lines = {i: [l for l in out.splitlines() if l.startswith(f"[p{i}] ")] for i in range(2)}
  for i in range(2):
    text = "\n".join(lines[i])
    assert f"process {i} of 2" in text and "mesh of 4 devices" in text, text[-2000:]
  # Both processes report the same global step and loss.
  last = [[l for l in lines[i] if "step 2/2" in l][-1] for i in range(2)]
  loss = [l.split("loss ")[1].split(" ")[0] for l in last]
  assert loss[0] == loss[1], last
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]  # one checkpoint, the last step


def test_local_sh_propagates_a_failure(tmp_path):
  r = _local(tmp_path / "bad", "--config.train.no_such_key=1", timeout=120)
  assert r.returncode != 0
  # Both processes reject the flag; whichever exits first makes local.sh stop the other, which
  # may not have printed yet: one prefixed error line is what is certain.
  assert re.search(r"^\[p[01]\] fdeblur: error: .*no_such_key", r.stdout, re.M), r.stdout
  assert re.search(r"process [01] \(pid \d+\) exited with status", r.stderr), r.stderr


def test_local_sh_stops_the_others_when_one_process_fails(tmp_path):
  """Process 1 fails at once; process 0 would wait for it forever (as in a collective)."""
  fake = tmp_path / "fake_python"
  fake.write_text("#!/bin/sh\ncase \"$*\" in *--process_id=1*) sleep 3; echo broken; exit 3;; esac\n"
                  "echo waiting; exec sleep 120\n")
  fake.chmod(0o755)
  env = dict(os.environ, CONFIG="c", WORKDIR=str(tmp_path / "w"), PORT="12345", PYTHON=str(fake))
  r = subprocess.run([BASH, os.path.join(LAUNCH, "local.sh")], env=env, cwd=ROOT,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 3  # and within the timeout: process 0's sleep was stopped
  assert "[p1] broken" in r.stdout and "[p0] waiting" in r.stdout
  assert "process 1" in r.stderr


def test_tpu_vm_dry_run_runs_one_command_on_every_worker():
  env = {"TPU_NAME": "fd", "ZONE": "us-west4-a", "CONFIG": "configs/fan_luo.py",
         "WORKDIR": "gs://b/run", "DATA_DIR": "gs://b/tfds", "ACCELERATOR_TYPE": "v5litepod-16",
         "RUNTIME_VERSION": "v2-alpha-tpuv5-lite", "DRY_RUN": "1"}
  r = _empty_env_run("tpu_vm.sh", env, "--config.train.batch_size=64", path="/usr/bin:/bin")
  assert r.returncode == 0, r.stderr
  commands = [l for l in r.stdout.splitlines() if l.startswith("+ gcloud")]
  assert "tpu-vm create fd" in commands[0] and "--accelerator-type=v5litepod-16" in commands[0]
  assert all("--worker=all" in c for c in commands[1:])
  assert "fdeblur.main" in commands[-1] and "--multihost" in commands[-1]
  assert "--config.dataset.data_dir=gs://b/tfds" in commands[-1]
  assert "--config.train.batch_size=64" in commands[-1]


def test_benchmarks_main_writes_one_table_per_benchmark(tmp_path):
  """`python -m benchmarks --only ...` (the same runner as --all) on a quick inference setting."""
  out = tmp_path / "results.md"
  r = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "inference", "--out", str(out),
                      "--args", "inference=--sizes 32 --batch 2 --no_eager"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  text = out.read_text()
  assert "## Inference" in text and "| 32² |" in text and "n/a" in text  # no MFU on CPU
  from benchmarks.__main__ import extract
  # Rows split by other output are kept; a table printed twice gives its final copy.
  assert extract("x\n| h |\n|---|\nDataset built\n| 1 |\n") == "x\n\n| h |\n|---|\n| 1 |"
  assert extract("| h |\n|---|\n| 1 |\n\n| h |\n|---|\n| 2 |\n") == "| h |\n|---|\n| 2 |"


def test_vs_pytorch_device_selection_and_rows(monkeypatch):
  """--device=auto runs both sides on the GPU only when JAX and PyTorch both see one (never JAX on
  the GPU against PyTorch on the CPU); --device=gpu names the side that sees none; --rows parses."""
  from benchmarks import vs_pytorch as vp
  with pytest.raises(ValueError, match=r"^--device=gpu: no GPU visible to JAX \(default backend"):
    vp.select_device("gpu")  # the tests' JAX sees CPU devices only
  assert vp.select_device("cpu")[0].platform == "cpu"
  gpu = types.SimpleNamespace(platform="gpu")
  for jax_gpus, torch_cuda, expected in (([], True, "cpu"), ([gpu], False, "cpu"),
                                         ([gpu], True, "cuda"), ([gpu], None, "cuda")):
    monkeypatch.setattr(vp, "_jax_gpus", lambda g=jax_gpus: g)
    monkeypatch.setattr(vp, "_torch_cuda", lambda c=torch_cuda: c)
    assert vp.select_device("auto")[1] == expected, (jax_gpus, torch_cuda)
  monkeypatch.setattr(vp, "_torch_cuda", lambda: False)
  with pytest.raises(ValueError, match=r"to PyTorch \(torch.cuda.is_available\(\) is False\)$"):
    vp.select_device("gpu")
  assert vp.parse_rows("16:16, 64:4") == [(16, 16), (64, 4)]
  assert vp.parse_rows(vp.DEFAULT_ROWS["gpu"])[2] == (64, 1)  # the paper's batch on a GPU
  with pytest.raises(ValueError, match=r"^--rows=16x4: expected NGF:BATCH"):
    vp.parse_rows("16x4")


def test_vs_pytorch_table_rows_and_gpu_mfu_columns():
  from benchmarks import vs_pytorch as vp
  r = {"ngf": 16, "size": 64, "batch": 16, "params": 1_234_567, "flops": 2e12, "jax_ms": 10.0,
       "torch_ms": 12.5, "before_ms": 20.0}
  cpu = vp.table_row(r, False, None)
  assert cpu == "| deblurgan ngf 16 | 64² | 16 | 1,234,567 | 10.0 | 12.5 | 1.25× |"
  # On a GPU (a peak known): GFLOP/step, then FLOPs / step time / peak for each side.
  gpu = vp.table_row(r, True, 1e15)
  assert gpu.endswith("| 20.0 | 0.62× | 1.25× | 2,000.0 | 20.0% | 16.0% |"), gpu
  for row, before, peak in ((cpu, False, None), (gpu, True, 1e15)):
    head, sep = vp.table_header(before, peak).splitlines()
    assert head.count("|") == sep.count("|") == row.count("|")
  assert "MFU" not in vp.table_header(False, None)
  no_torch = dict(r, torch_ms=None, flops=None)
  assert vp.table_row(no_torch, False, 1e15).endswith("| 10.0 | n/a | n/a | n/a | n/a | n/a |")


def test_vs_pytorch_step_flops_are_the_generators():
  """The FLOPs behind the MFU columns: forward + backward is ~3x the forward convolutions'
  2·MACs (counted here by hand for ngf 4 at 16², batch 2), plus norms and Adam."""
  import jax
  from benchmarks import vs_pytorch as vp
  ngf, size, batch = 4, 16, 2
  s2, s4 = (size // 2) ** 2, (size // 4) ** 2
  macs = (49 * 3 * ngf * size**2 + 9 * ngf * 2 * ngf * s2 + 9 * 2 * ngf * 4 * ngf * s4  # stem, downs
          + 12 * 9 * (4 * ngf) ** 2 * s4  # 6 residual blocks of 2 convolutions
          + 9 * 4 * ngf * 2 * ngf * s4 + 9 * 2 * ngf * ngf * s2  # transposed convolutions
          + 49 * ngf * 3 * size**2)  # head
  steps = vp.make_steps(ngf, size, batch, device=jax.devices("cpu")[0])
  forward = 2 * macs * batch
  assert 2.5 * forward < steps.flops < 4.5 * forward, (steps.flops, forward)
  steps.jax()
  steps.jax()  # the donated state is handed on from step to step


def test_vs_pytorch_runs_a_tiny_bfloat16_row_on_the_cpu_and_refuses_a_missing_gpu():
  common = [sys.executable, "-m", "benchmarks.vs_pytorch", "--steps", "1", "--sizes", "16",
            "--rows", "4:2", "--threads", "1"]
  r = subprocess.run(common + ["--device=cpu", "--dtype=bfloat16"], cwd=ROOT, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  lines = r.stdout.splitlines()
  assert "both sides compute in bfloat16" in lines[0] and " on cpu;" in lines[0]
  rows = [l for l in lines if l.startswith("| deblurgan")]
  assert len(rows) == 1 and rows[0].startswith("| deblurgan ngf 4 | 16² | 2 | 31,939 | ")
  assert "MFU" not in r.stdout  # no peak FLOP/s on the CPU
  bad = subprocess.run(common + ["--device=gpu"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode != 0
  assert bad.stderr.splitlines()[-1].startswith("vs_pytorch: --device=gpu: no GPU visible to JAX")
