"""Model registry: `create(config.model, rngs)` builds the network a config names."""
import jax.numpy as jnp
import ml_collections
from flax import nnx

from fdeblur.models.deblurgan import DeblurGANGenerator


def _deblurgan(cfg, dtype, rngs):
  return DeblurGANGenerator(ngf=cfg.get("ngf", 64), n_blocks=cfg.get("n_blocks", 6),
                            dropout=cfg.get("dropout", 0.5), dtype=dtype, rngs=rngs)


REGISTRY = {"deblurgan": _deblurgan}


def create(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.name not in REGISTRY:
    raise ValueError(f"config.model.name={cfg.name!r} is not one of {sorted(REGISTRY)}")
  return REGISTRY[cfg.name](cfg, jnp.dtype(cfg.get("dtype", "float32")), rngs)
