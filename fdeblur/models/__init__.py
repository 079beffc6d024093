"""Model registry: one `Entry` per model name; the options a config may set are the keyword
arguments of the model's constructor, with the constructor's defaults (the papers' values).

`model_config(name)` / `discriminator_config(name)` build the `config.model` /
`config.discriminator` sections from those signatures (plus `name`, `dtype` and the entry's
`extra` keys), so `--config.model.<any constructor argument>` works for every config.
`create(config.model, rngs)` builds the inference generator; `create_training` the module a
trainer optimises (with G_s for chrysos2019); `create_discriminator(config.discriminator, rngs)`.

| name            | paper                         | module (options: its constructor)              |
|-----------------|-------------------------------|------------------------------------------------|
| `resnet_deblur` | Chrysos & Zafeiriou 2017      | `ResNetDeblur`                                 |
| `hourglass`     | Newell et al. 2016 (2019 s1)  | `StackedHourglass`                             |
| `chrysos2019`   | Chrysos et al. 2019 (HG+G_bl) | `IdentityPreservingGAN` (inference: its        |
|                 |                               | `Chrysos2019Generator`); + hourglass_checkpoint |
| `deblurgan`     | Fan & Luo / DeblurGAN         | `DeblurGANGenerator`                           |

Discriminators: `patchgan` (DeblurGAN / Fan & Luo) and `chrysos2019`.

Every generator's `__call__(images, *, rngs=None)` maps float [B, H, W, C] images in [0, 1] to
float32 [0, 1]; dropout keys come with the call. What is specific to a model beyond its module
(parameters the optimiser must not touch, weights grafted from another run) is given by its
entry's `frozen_prefixes` / `load_pretrained` hooks, so the trainer names no model.
"""
import dataclasses
import inspect
from collections.abc import Callable

import jax.numpy as jnp
import ml_collections
from flax import nnx

from fdeblur.models import identity_gan
from fdeblur.models.deblurgan import DeblurGANGenerator
from fdeblur.models.discriminators import Chrysos2019Discriminator, PatchGANDiscriminator
from fdeblur.models.hourglass import StackedHourglass
from fdeblur.models.identity_gan import Chrysos2019Generator, IdentityPreservingGAN
from fdeblur.models.layers import count_params  # noqa: F401  (re-exported for benchmarks)
from fdeblur.models.resnet_deblur import ResNetDeblur

_NOT_OPTIONS = ("dtype", "rngs")


def _no_frozen(cfg):
  del cfg
  return ()


@dataclasses.dataclass(frozen=True)
class Entry:
  module: type  # the inference module
  training_module: type | None = None  # with training-only streams; same options
  extra: tuple = ()  # (key, default) config keys beyond the constructor's, read by the hooks
  frozen_prefixes: Callable = _no_frozen  # cfg -> parameter path prefixes never updated
  load_pretrained: Callable | None = None  # (cfg, params, model_state) -> (params, model_state)

  def options(self) -> dict:
    """Constructor keyword arguments and their defaults (module-valued ones left out)."""
    sig = inspect.signature((self.training_module or self.module).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in _NOT_OPTIONS + ("self",) and p.default is not inspect.Parameter.empty
            and p.default is not None}


REGISTRY = {
    "resnet_deblur": Entry(ResNetDeblur),
    "hourglass": Entry(StackedHourglass),
    "chrysos2019": Entry(Chrysos2019Generator, IdentityPreservingGAN,
                         extra=(("hourglass_checkpoint", ""),),
                         frozen_prefixes=identity_gan.frozen_prefixes,
                         load_pretrained=identity_gan.load_pretrained),
    "deblurgan": Entry(DeblurGANGenerator),
}
DISCRIMINATORS = {
    "patchgan": Entry(PatchGANDiscriminator),
    "chrysos2019": Entry(Chrysos2019Discriminator),
}


def _entry(table: dict, name: str, what: str) -> Entry:
  if name not in table:
    raise ValueError(f"config.{what}.name={name!r} is not one of {sorted(table)}")
  return table[name]


def _section(entry: Entry | None, name: str, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({"name": name, "dtype": "float32"})
  if entry is not None:
    for key, value in {**entry.options(), **dict(entry.extra)}.items():
      c[key] = value
  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f"{name!r} has no option {key!r} (options: {', '.join(sorted(c))})")
    c[key] = value
  return c


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.model` for generator `name`: name, dtype (computation; parameters are float32)
  and every constructor option with its default."""
  return _section(_entry(REGISTRY, name, "model"), name, **overrides)


def discriminator_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.discriminator` for `name` ("" = no discriminator: name and dtype only)."""
  entry = _entry(DISCRIMINATORS, name, "discriminator") if name else None
  return _section(entry, name, **overrides)


def _kwargs(entry: Entry, cfg, what: str) -> dict:
  options = entry.options()
  expected = set(options) | {k for k, _ in entry.extra} | {"name", "dtype"}
  if set(cfg.keys()) != expected:
    raise ValueError(
        f"config.{what} does not match {cfg.name!r}'s options (unknown: "
        f"{sorted(set(cfg.keys()) - expected)}, missing: {sorted(expected - set(cfg.keys()))}); "
        f"build it with models.{what}_config({cfg.name!r}) (config_lib.base_config({what}=...))")
  return {k: tuple(cfg[k]) if isinstance(options[k], tuple) else cfg[k] for k in options}


def _build(cls, entry: Entry, cfg, what: str, rngs: nnx.Rngs) -> nnx.Module:
  return cls(**_kwargs(entry, cfg, what), dtype=jnp.dtype(cfg.dtype), rngs=rngs)


def create(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The inference generator `config.model` names."""
  entry = _entry(REGISTRY, cfg.name, "model")
  return _build(entry.module, entry, cfg, "model", rngs)


def create_training(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The module a trainer optimises: with every training-only stream (G_s for chrysos2019)."""
  entry = _entry(REGISTRY, cfg.name, "model")
  return _build(entry.training_module or entry.module, entry, cfg, "model", rngs)


def create_discriminator(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  entry = _entry(DISCRIMINATORS, cfg.name, "discriminator")
  return _build(entry.module, entry, cfg, "discriminator", rngs)


def frozen_prefixes(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Parameter path prefixes ("a/b") of the training module the optimiser leaves unchanged."""
  return tuple(_entry(REGISTRY, cfg.name, "model").frozen_prefixes(cfg))


def load_pretrained(cfg: ml_collections.ConfigDict, params: dict, model_state: dict):
  """(params, model_state) with the weights the model takes from another run (if any)."""
  hook = _entry(REGISTRY, cfg.name, "model").load_pretrained
  return hook(cfg, params, model_state) if hook else (params, model_state)
