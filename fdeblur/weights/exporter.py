"""`python -m fdeblur.weights --workdir=WORKDIR [--out=DIR]`: a training workdir's latest
checkpoint -> DIR/{config.json, params.msgpack} (the generator's inference weights; see the
package's docstring). Kept apart from the package, which training imports (init_from), because
exporting restores a train state (fdeblur.state)."""
import os
import sys

import jax
import numpy as np
from absl import flags
from flax import serialization

from fdeblur import config_lib, networks, state as state_lib, weights


def export(workdir: str, out_dir: str) -> dict:
  """The latest checkpoint of a training workdir -> out_dir/{config.json, params.msgpack}.
  Returns {"step", "parameters", "bytes"}."""
  config = config_lib.from_workdir(workdir)
  _, state = state_lib.restore_for_evaluation(config, workdir)
  params = jax.device_get(networks.inference_params(state))
  blob = serialization.msgpack_serialize({
      "params": _numpy(params), "model_state": _numpy(jax.device_get(state.model_state)),
      "step": int(state.step)})
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, weights.PARAMS_FILE), "wb") as f:
    f.write(blob)
  with open(os.path.join(out_dir, weights.CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=1))
  return {"step": int(state.step), "bytes": len(blob),
          "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params)))}


def _numpy(tree):
  return jax.tree.map(np.asarray, tree)


def main(argv=None) -> int:
  """python -m fdeblur.weights --workdir=W [--out=DIR]: export W's latest checkpoint."""
  argv = sys.argv[1:] if argv is None else list(argv)
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).",
                      flag_values=fv)
  flags.DEFINE_string("out", weights.DEFAULT, "Output folder (default: the shipped model's).",
                      flag_values=fv)
  try:
    rest = fv(["fdeblur.weights", *argv])[1:]
    if rest or not fv.workdir:
      raise flags.Error("usage: python -m fdeblur.weights --workdir=WORKDIR [--out=DIR]")
    if not os.path.isfile(os.path.join(fv.workdir, weights.CONFIG_FILE)):
      raise flags.Error(f"--workdir={fv.workdir} has no {weights.CONFIG_FILE}: not a training "
                        "workdir")
  except flags.Error as e:
    print(f"fdeblur.weights: error: {e}", file=sys.stderr)
    return 2
  info = export(fv.workdir, fv.out)
  print(f"exported step {info['step']} ({info['parameters']} parameters, {info['bytes']} bytes) "
        f"to {fv.out}")
  return 0
