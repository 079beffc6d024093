"""Model registry: `create(config.model, rngs)` builds the generator a config names.

Every generator takes keyword config values + `dtype` + `rngs`; `__call__(images, *, rngs=None)`
maps float [B, H, W, C] images in [0, 1] to float32 [0, 1]; dropout keys come with the call.
Options are read from `config.model` with the paper's value as the default:

| name            | paper                        | options (defaults)                                    |
|-----------------|------------------------------|-------------------------------------------------------|
| `resnet_deblur` | Chrysos & Zafeiriou 2017     | depth 50, width 64, skip_blocks (1, 2)                |
| `hourglass`     | Newell et al. 2016 (2019 s1) | n_stacks 8, features 256, n_modules 1, depth 4        |
| `chrysos2019`   | Chrysos et al. 2019 (HG+G_bl)| ngf 64, dropout 0.5, unet_skips (1, 2), order         |
|                 |                              | "norm_act", hg_stacks 8, hg_features 256, hg_modules 1,|
|                 |                              | freeze_hourglass True                                 |
| `deblurgan`     | Fan & Luo / DeblurGAN        | ngf 64, n_blocks 6, dropout 0.5                       |

`create_training(config.model, rngs)` gives, for `chrysos2019`, the training module with both
streams (`IdentityPreservingGAN`; its `.generator` is the inference module), else `create`'s.
`create_discriminator(config.discriminator, rngs)`: name "patchgan" (DeblurGAN / Fan & Luo) or
"chrysos2019"; options ndf 64, n_layers 3, sigmoid False, in_channels (3 / 6).
"""
import jax.numpy as jnp
import ml_collections
from flax import nnx

from fdeblur.models.deblurgan import DeblurGANGenerator
from fdeblur.models.discriminators import (Chrysos2019Discriminator, NLayerDiscriminator,
                                           PatchGANDiscriminator)
from fdeblur.models.hourglass import StackedHourglass
from fdeblur.models.identity_gan import Chrysos2019Generator, IdentityPreservingGAN
from fdeblur.models.layers import count_params
from fdeblur.models.resnet_deblur import ResNetDeblur


def _deblurgan(cfg, dtype, rngs):
  return DeblurGANGenerator(ngf=cfg.get("ngf", 64), n_blocks=cfg.get("n_blocks", 6),
                            dropout=cfg.get("dropout", 0.5), dtype=dtype, rngs=rngs)


def _resnet_deblur(cfg, dtype, rngs):
  return ResNetDeblur(depth=cfg.get("depth", 50), width=cfg.get("width", 64),
                      skip_blocks=tuple(cfg.get("skip_blocks", (1, 2))), dtype=dtype, rngs=rngs)


def _hourglass(cfg, dtype, rngs):
  return StackedHourglass(n_stacks=cfg.get("n_stacks", 8), features=cfg.get("features", 256),
                          n_modules=cfg.get("n_modules", 1), depth=cfg.get("depth", 4),
                          dtype=dtype, rngs=rngs)


def _chrysos2019_kwargs(cfg):
  return dict(ngf=cfg.get("ngf", 64), dropout=cfg.get("dropout", 0.5),
              unet_skips=tuple(cfg.get("unet_skips", (1, 2))), order=cfg.get("order", "norm_act"),
              hg_stacks=cfg.get("hg_stacks", 8), hg_features=cfg.get("hg_features", 256),
              hg_modules=cfg.get("hg_modules", 1),
              freeze_hourglass=cfg.get("freeze_hourglass", True))


def _chrysos2019(cfg, dtype, rngs):
  return Chrysos2019Generator(**_chrysos2019_kwargs(cfg), dtype=dtype, rngs=rngs)


def _chrysos2019_training(cfg, dtype, rngs):
  return IdentityPreservingGAN(**_chrysos2019_kwargs(cfg), dtype=dtype, rngs=rngs)


REGISTRY = {
    "resnet_deblur": _resnet_deblur,
    "hourglass": _hourglass,
    "chrysos2019": _chrysos2019,
    "deblurgan": _deblurgan,
}
TRAINING_REGISTRY = {"chrysos2019": _chrysos2019_training}


def _dtype(cfg):
  return jnp.dtype(cfg.get("dtype", "float32"))


def create(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.name not in REGISTRY:
    raise ValueError(f"config.model.name={cfg.name!r} is not one of {sorted(REGISTRY)}")
  return REGISTRY[cfg.name](cfg, _dtype(cfg), rngs)


def create_training(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The module a trainer optimises: with every training-only stream (G_s for chrysos2019)."""
  if cfg.name in TRAINING_REGISTRY:
    return TRAINING_REGISTRY[cfg.name](cfg, _dtype(cfg), rngs)
  return create(cfg, rngs)


DISCRIMINATORS = ("patchgan", "chrysos2019")


def create_discriminator(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  name = cfg.get("name", "patchgan")
  if name == "patchgan":
    return PatchGANDiscriminator(in_channels=cfg.get("in_channels", 3), ndf=cfg.get("ndf", 64),
                                 n_layers=cfg.get("n_layers", 3),
                                 sigmoid=cfg.get("sigmoid", False), dtype=_dtype(cfg), rngs=rngs)
  if name == "chrysos2019":
    return Chrysos2019Discriminator(in_channels=cfg.get("in_channels", 6),
                                    ndf=cfg.get("ndf", 64), dtype=_dtype(cfg), rngs=rngs)
  raise ValueError(f"discriminator name {name!r} is not one of {DISCRIMINATORS}")
