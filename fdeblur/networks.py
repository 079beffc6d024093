"""Networks of a config as (graph, state) pairs for jit-compiled functions (Flax NNX).

`nnx.split` once, then `nnx.merge` inside the compiled step: parameters and other variables
(batch statistics) travel as pure dicts, which optax, orbax and shardings handle directly.
"""
from functools import cached_property

import jax
import ml_collections
from flax import nnx

from fdeblur import models


class Networks:
  """One module's graph in train and eval mode and its initial variables."""

  def __init__(self, module: nnx.Module):
    module.train()
    self.train_graph, params, rest = nnx.split(module, nnx.Param, ...)
    module.eval()
    self.eval_graph = nnx.graphdef(module)
    self.params, self.model_state = params.to_pure_dict(), rest.to_pure_dict()

  @classmethod
  def generator(cls, config: ml_collections.ConfigDict, abstract: bool = False) -> "Networks":
    """The generator with every training-only stream (G_s of chrysos2019); calling it runs
    the inference path. abstract: variables are jax.ShapeDtypeStruct (nnx.eval_shape), nothing
    is allocated (ahead-of-time compilation, fdeblur.aot)."""
    return cls(_build(lambda: models.create_training(config.model, nnx.Rngs(config.seed)),
                      abstract))

  @classmethod
  def discriminator(cls, config: ml_collections.ConfigDict,
                    abstract: bool = False) -> "Networks | None":
    if not config.discriminator.name:
      return None
    return cls(_build(lambda: models.create_discriminator(config.discriminator,
                                                          nnx.Rngs(config.seed + 1)), abstract))

  def apply(self, params, model_state, *inputs, train: bool, dropout_key=None, method=None):
    """Runs the module (or its `method`); returns (output, updated non-parameter variables)."""
    model = nnx.merge(self.train_graph if train else self.eval_graph, params, model_state)
    fn = getattr(model, method) if method else model
    kwargs = {"rngs": nnx.Rngs(dropout=dropout_key)} if dropout_key is not None else {}
    out = fn(*inputs, **kwargs)
    return out, nnx.state(model, nnx.Not(nnx.Param)).to_pure_dict()

  @cached_property
  def apply_eval(self):
    """jit-compiled (params, model_state, images) -> output in eval mode."""
    return jax.jit(lambda p, s, x: self.apply(p, s, x, train=False)[0])


def _build(make, abstract: bool) -> nnx.Module:
  return nnx.eval_shape(make) if abstract else make()


def inference_params(state):
  """The weights evaluation uses: the EMA of the generator when training keeps one."""
  return state.ema_params if state.ema_params else state.params
