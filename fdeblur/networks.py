"""The generator of a config as a (graph, state) pair for jit-compiled functions (Flax NNX).

`nnx.split` once, then `nnx.merge` inside the compiled step: parameters and other variables
(batch statistics) travel as pure dicts, which optax, orbax and shardings handle directly.
"""
from functools import cached_property

import jax
import ml_collections
from flax import nnx

from fdeblur import models


class Networks:
  """The generator's graph in train and eval mode and its initial variables."""

  def __init__(self, config: ml_collections.ConfigDict):
    model = models.create(config.model, nnx.Rngs(config.seed))
    model.train()
    self.train_graph, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    self.eval_graph = nnx.graphdef(model)
    self.params, self.model_state = params.to_pure_dict(), rest.to_pure_dict()

  def apply(self, params, model_state, images, *, train: bool, dropout_key=None):
    """Returns (output, updated non-parameter variables)."""
    graph = self.train_graph if train else self.eval_graph
    model = nnx.merge(graph, params, model_state)
    rngs = nnx.Rngs(dropout=dropout_key) if dropout_key is not None else None
    out = model(images, rngs=rngs)
    return out, nnx.state(model, nnx.Not(nnx.Param)).to_pure_dict()

  @cached_property
  def apply_eval(self):
    """jit-compiled (params, model_state, images) -> output in eval mode."""
    return jax.jit(lambda p, s, x: self.apply(p, s, x, train=False)[0])


def inference_params(state):
  """The weights evaluation uses: the EMA of the generator when training keeps one."""
  return state.ema_params if state.ema_params else state.params
