"""Data parallelism over a `jax.sharding.Mesh`. The batch axis is split over every mesh axis and
parameters are replicated, so the same code runs on one CPU, 8 simulated CPU devices or a
multi-host pod; a 2-D mesh (`replica`, `data`) maps hosts x local devices for multi-slice runs."""
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(shape=(), devices=None) -> Mesh:
  """shape: () or (n,) -> 1-D `data` mesh; (a, b) -> (`replica`, `data`) mesh; -1 = the rest."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  shape = tuple(shape) or (-1,)
  if len(shape) > 2:
    raise ValueError(f"config.mesh_shape={shape}: at most 2 axes (replica, data)")
  names = (DATA_AXIS,) if len(shape) == 1 else ("replica", DATA_AXIS)
  try:
    return Mesh(devices.reshape(shape), names)
  except ValueError as e:
    raise ValueError(f"config.mesh_shape={shape} does not fit {devices.size} devices") from e


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all mesh axes."""
  return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def per_shard(fn, mesh: Mesh, num_args: int):
  """`fn` run on each device's slice of the batch, with no communication (jax.shard_map): the
  leading axis of each of its `num_args` arguments and of its outputs is split over all mesh
  axes. For per-sample work (the blur synthesis) that the SPMD partitioner would otherwise
  partition on its own, with all-gathers."""
  spec = P(mesh.axis_names)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * num_args, out_specs=spec,
                       check_vma=False)


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; the batch must split evenly over devices."""
  if global_batch_size % mesh.size:
    raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                     f"{mesh.size} devices of the mesh")
  return global_batch_size // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax.Array sharded on the batch axes."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1):
  """jax.distributed.initialize: explicit coordinator for local/CPU runs, or auto-detection
  (Cloud TPU, SLURM, GKE) when no address is given."""
  if jax.config.jax_platforms in ("cpu",) or (coordinator_address and
                                               "127.0.0.1" in coordinator_address):
    # CPU devices of several processes talk through gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if coordinator_address:
    kwargs = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
