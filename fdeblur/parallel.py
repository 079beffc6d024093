"""Data parallelism over a `jax.sharding.Mesh` with one `data` axis spanning every device of
every process. The same code runs on one CPU, 8 simulated CPU devices or a multi-host pod."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the `data` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; the batch must split evenly over devices."""
  if global_batch_size % mesh.size:
    raise ValueError(f"config.train.batch_size={global_batch_size} is not divisible by the "
                     f"{mesh.size} devices of the mesh")
  return global_batch_size // jax.process_count()


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax.Array sharded on the data axis."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
