"""Ahead-of-time compilation (fdeblur.aot, --mode=compile): the train step compiled abstractly for
8 simulated CPU devices and for a TPU topology (libtpu, no TPU), its collectives and memory."""
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_config
from fdeblur import aot, degrade, objectives, parallel

_HLO = """
  %all-reduce.39 = (f32[64]{0:T(128)}, f32[3,3,64,64]{3,2,1,0}, f32[]) all-reduce(%a, %b, %c), channel_id=3
  %all-gather-start.1 = (f32[4,16,120]{2,1,0}, f32[4,64,120]{2,1,0}) all-gather-start(%x), dimensions={1}
  %all-gather-done.1 = f32[4,64,120]{2,1,0} all-gather-done(%all-gather-start.1)
  %all-reduce-start.2 = bf16[1024]{0} all-reduce-start(%y), channel_id=4
  %all-reduce-done.2 = bf16[1024]{0} all-reduce-done(%all-reduce-start.2)
  %fusion.3 = f32[8]{0} fusion(%all-reduce.39), kind=kLoop
"""


def test_collectives_are_counted_once_with_their_result_bytes():
  got = aot.collectives(_HLO)
  assert got == {"all-reduce": {"count": 2, "bytes": 4 * (64 + 9 * 64 * 64 + 1) + 2 * 1024},
                 "all-gather": {"count": 1, "bytes": 4 * 4 * 64 * 120}}


def test_fit_finds_the_largest_batch_under_the_hbm(monkeypatch):
  kind = aot.CHIPS["TPU v5 lite"]
  per_sample, fixed = 0.7 * aot.GiB, 1.5 * aot.GiB  # fits up to 20 per chip

  def fake(config, devices, global_batch, keep_hlo=False):
    b = global_batch // len(devices)
    return aot.Compiled(chips=len(devices), hosts=1, global_batch=global_batch, chip=kind,
                        compile_s=1.0, argument_bytes=int(fixed), temp_bytes=int(per_sample * b),
                        output_bytes=0, alias_bytes=0, flops=1.0, bytes_accessed=1.0,
                        collectives={})

  class Dev:
    device_kind, process_index = "TPU v5 lite", 0

  monkeypatch.setattr(aot, "compile_step", fake)
  best, r, tried = aot.fit(None, [Dev()] * 4, start=4, max_compiles=8, log=lambda *_: None)
  assert best == 20 and r.per_chip_batch == 20 and r.fits
  assert sorted(tried) == [4, 8, 20, 21] and not tried[21].fits  # 20: the linear prediction


def test_blur_per_device_shard_matches_one_device():
  """Sample i's blur comes from key i of the global batch on any mesh."""
  cfg = load_config("chrysos2017").blur
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (16, 32, 32, 3), np.uint8))
  key = jax.random.PRNGKey(3)
  outs = [objectives.make_blur(cfg, parallel.make_mesh(devices=d))(key, images)[0]
          for d in (jax.devices()[:1], jax.devices())]
  ref = degrade.degrade(key, images, cfg)[0]
  np.testing.assert_allclose(outs[0], ref, atol=1e-6)
  np.testing.assert_allclose(outs[1], ref, atol=1e-6)


def _tiny(name="quickstart", variant="tiny"):
  cfg = load_config(name, variant)
  if cfg.model.name == "deblurgan":
    cfg.model.n_blocks = 1  # the sharding does not depend on the depth; compiles faster
  return cfg


def test_step_on_8_cpu_devices_holds_only_the_gradient_all_reduce():
  assert jax.device_count() == 8
  r = aot.compile_step(_tiny(), jax.devices(), 16)
  assert set(r.collectives) == {"all-reduce"}, r.collectives
  assert r.chips == 8 and r.per_chip_batch == 2 and r.chip is None and r.fits is None
  assert r.flops > 0 and r.argument_bytes > 0


def test_gan_step_on_8_cpu_devices_holds_only_all_reduces():
  cfg = _tiny("fan_luo", "wgan_gp,tiny")
  cfg.gan.n_critic = 1  # the gradient penalty's per-sample draws are the point, not 5 copies
  r = aot.compile_step(cfg, jax.devices(), 8)
  assert set(r.collectives) == {"all-reduce"}, r.collectives


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (test extra)")
def test_step_compiles_for_a_tpu_topology_without_a_tpu():
  devices = aot.target_devices("v5e:2x2")
  cfg = _tiny()
  r = aot.compile_step(cfg, devices, 8)
  assert r.chips == 4 and r.hosts == 1 and r.chip.name == "v5e" and r.fits
  # The quickstart step on v5e:2x2 used to hold 10 all-gathers (the blur's per-sample draws).
  assert set(r.collectives) == {"all-reduce"}, r.collectives
  setup = aot.setup_for(cfg, parallel.make_mesh(devices=np.asarray(devices)))
  params = sum(x.size for x in jax.tree.leaves(setup.g.params))
  # The state (params + 2 Adam moments, float32) is an argument, donated to the output.
  assert r.argument_bytes >= 3 * 4 * params and r.alias_bytes >= 3 * 4 * params
  assert 0 < r.memory_bytes < r.chip.hbm_bytes and r.flops > 0 and r.roofline_s > 0
  text = aot.table("quickstart:tiny", "v5e:2x2", r)
  assert "| target | v5e:2x2: 4 chips v5e, 1 hosts |" in text and "all-reduce ×1" in text


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (test extra)")
@pytest.mark.parametrize("topology,chips,hosts,kind", [
    ("v5e:4x4", 16, 4, aot.CHIPS["TPU v5 lite"]), ("v5p:4x4x4", 64, 16, aot.CHIPS["TPU v5"]),
    ("v6e:16x16", 256, 64, aot.CHIPS["TPU v6 lite"])])
def test_pod_slices_are_described_with_their_chip_figures(topology, chips, hosts, kind):
  """The README's slices (v5e-16, v5p-64, v6e-256) come from libtpu's description alone, and
  its device_kind names select the chip's HBM, peak and bandwidth (else no fit, no roofline)."""
  devices = aot.target_devices(topology)
  assert (len(devices), aot._hosts(devices), aot.chip(devices[0])) == (chips, hosts, kind)  # noqa: SLF001


@pytest.mark.parametrize("topology,cpu_forms", [("v5e:2x2", False), ("", True)])
def test_step_convolutions_follow_the_platform_compiled_for(monkeypatch, topology, cpu_forms):
  """The networks' convolutions take the formulation of the devices the step is compiled for,
  not the host's: the CPU's matrix-product form of the 7x7 head only in a CPU step."""
  from fdeblur.models import layers  # pylint: disable=import-outside-toplevel
  calls = []
  real = layers.conv_tap_matmul
  monkeypatch.setattr(layers, "conv_tap_matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
  devices = aot.target_devices(topology)
  cfg = _tiny()
  setup = aot.setup_for(cfg, parallel.make_mesh(devices=np.asarray(devices)))
  setup._step.lower(aot.abstract_state(setup),  # noqa: SLF001  (traced, not compiled)
                    aot.abstract_batch(cfg, 2 * len(devices), setup.mesh), setup.vgg)
  assert len(calls) == (1 if cpu_forms else 0)  # the head


def test_compile_mode_prints_the_table_on_local_devices():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "fdeblur.main", "--mode=compile",
                      "--config=configs/quickstart.py:tiny", "--config.model.n_blocks=1",
                      "--per_chip_batch=2"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  # (the program of test_step_on_8_cpu_devices_...: found in the run's compilation cache)
  assert "| global / per-host batch | 16 / 16 |" in r.stdout
  assert "| collectives | all-reduce" in r.stdout and "all-gather" not in r.stdout
  bad = subprocess.run([sys.executable, "-m", "fdeblur.main", "--mode=compile",
                        "--config=configs/quickstart.py:tiny", "--topology=v9z:1x1"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "--topology=v9z:1x1" in bad.stderr.splitlines()[-1]


def test_benchmark_compiles_in_a_process_of_its_own_and_survives_its_crash():
  """benchmarks.aot runs each (config, slice) in a spawned process: a compiler that segfaults
  (libtpu 0.0.42.1 on v6e train steps) ends that row with the signal's name, not the run."""
  import operator
  import signal as signal_lib
  from benchmarks import aot as aot_bench
  assert aot_bench.isolated(operator.add, 2, 3) == ("ok", 5)
  assert aot_bench.isolated(int, "x") == (
      "error", "ValueError: invalid literal for int() with base 10: 'x'")
  assert aot_bench.isolated(signal_lib.raise_signal, signal_lib.SIGSEGV) == (
      "error", "the compiling process died (killed by SIGSEGV)")
