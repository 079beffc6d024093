"""The fast formulations of fdeblur.models.layers against XLA's reference ops: same outputs and
gradients to float32 tolerance, same parameters (checkpoints keep loading)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from fdeblur.models import layers

NHWC = ("NHWC", "HWIO", "NHWC")


def _value_and_grads(fn, x, w, ct):
  """fn(x, w), d<fn, ct>/dx, d<fn, ct>/dw."""
  y, vjp = jax.vjp(fn, x, w)
  return (y, *vjp(ct))


def _assert_close(got, want, what):
  for g, r, name in zip(got, want, ("output", "input grad", "kernel grad")):
    assert g.shape == r.shape, f"{what}: {name} shape {g.shape} != {r.shape}"
    scale = float(jnp.max(jnp.abs(r))) or 1.0
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=2e-6 * scale,
                               err_msg=f"{what}: {name}")


@pytest.mark.parametrize("kernel,stride,paddings", [
    ((3, 3), 2, [((1, 2), (1, 2)), "SAME"]),  # DeblurGAN's, the 2019 decoder's
    ((4, 4), 2, ["VALID", ((0, 0), (2, 1))]),
    ((1, 1), 2, ["SAME"]),  # phases without any tap
    ((3, 2), 3, [((3, 1), (0, 2))])])
def test_subpixel_transposed_conv_matches_lax(kernel, stride, paddings):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 4, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kernel, 3, 4)), jnp.float32)
  for padding in paddings:
    ref_fn = lambda x, w, p=padding: lax.conv_transpose(x, w, (stride,) * 2, p,  # noqa: E731
                                                        dimension_numbers=NHWC)
    new_fn = lambda x, w, p=padding: layers.conv_transpose_subpixel(  # noqa: E731
        x, w, (stride,) * 2, p)
    y = ref_fn(x, w)
    ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    _assert_close(_value_and_grads(new_fn, x, w, ct), _value_and_grads(ref_fn, x, w, ct),
                  f"kernel {kernel} stride {stride} padding {padding}")


@pytest.mark.parametrize("padding", [((1, 2), (1, 2)), "SAME"])
def test_transposed_conv_layer_is_nnx_with_the_same_parameters(padding):
  """layers.ConvTranspose == nnx.ConvTranspose (DeblurGAN's and the 2019 decoder's geometry):
  same parameter tree, outputs and gradients, so old checkpoints load into the new layer."""
  kw = dict(strides=(2, 2), padding=padding, preferred_element_type=jnp.float32)
  new = layers.ConvTranspose(6, 5, (3, 3), **kw, rngs=nnx.Rngs(0))
  ref = nnx.ConvTranspose(6, 5, (3, 3), **kw, rngs=nnx.Rngs(1))
  ref_state = nnx.state(ref, nnx.Param)
  assert jax.tree.map(jnp.shape, nnx.state(new, nnx.Param)) == jax.tree.map(jnp.shape, ref_state)
  nnx.update(new, ref_state)  # a checkpoint of the old layer
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  ct = jax.random.normal(jax.random.key(1), (2, 16, 16, 5))

  def run(module):
    graphdef, params = nnx.split(module)
    y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    grads, dx = vjp(ct)
    return y, dx, grads["kernel"][...], grads["bias"][...]

  got, want = run(new), run(ref)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)


def test_transposed_conv_layer_bfloat16_and_fallback():
  """bfloat16 compute with a float32 output; kernel dilation falls back to nnx's form."""
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
  layer = layers.ConvTranspose(3, 2, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                               dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  y = layer(x)
  assert y.shape == (1, 8, 8, 2) and y.dtype == jnp.float32
  dilated = layers.ConvTranspose(3, 2, (3, 3), strides=(2, 2), kernel_dilation=(2, 2),
                                 padding="SAME", rngs=nnx.Rngs(0))
  ref = nnx.ConvTranspose(3, 2, (3, 3), strides=(2, 2), kernel_dilation=(2, 2), padding="SAME",
                          preferred_element_type=jnp.float32, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(dilated(x)), np.asarray(ref(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel,stride,padding", [
    ((3, 3), 1, "VALID"),  # DeblurGAN's residual conv (after its reflect pad)
    ((3, 3), 2, ((1, 1), (1, 1))),  # its stride-2 conv
    ((4, 4), 2, ((2, 2), (2, 2))),  # PatchGAN's
    ((7, 5), 3, "SAME"), ((1, 1), 2, "VALID")])
def test_im2col_conv_matches_lax(kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 8, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kernel, 3, 4)), jnp.float32)
  ref_fn = lambda x, w: lax.conv_general_dilated(x, w, (stride,) * 2, padding,  # noqa: E731
                                                 dimension_numbers=NHWC)
  new_fn = lambda x, w: layers.conv_im2col(x, w, (stride,) * 2, padding)  # noqa: E731
  y = ref_fn(x, w)
  ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  _assert_close(_value_and_grads(new_fn, x, w, ct), _value_and_grads(ref_fn, x, w, ct),
                f"kernel {kernel} stride {stride} padding {padding}")


def test_wide_conv_layer_is_nnx_conv_and_narrow_ones_stay_xla(monkeypatch):
  """layers.Conv: same parameters as nnx.Conv; wide layers (cin·cout >= IM2COL_MIN_CHANNELS)
  through im2col with the same outputs and gradients, narrow ones through lax's convolution."""
  calls = []
  real = layers.conv_im2col
  monkeypatch.setattr(layers, "conv_im2col", lambda *a, **k: calls.append(1) or real(*a, **k))
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 16))
  for cout, wide in ((8, False), (1024, True)):
    calls.clear()
    new = layers.Conv(16, cout, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0))
    ref = nnx.Conv(16, cout, (3, 3), strides=2, padding=((1, 1), (1, 1)),
                   preferred_element_type=jnp.float32, rngs=nnx.Rngs(1))
    ref_state = nnx.state(ref, nnx.Param)
    assert (jax.tree.map(jnp.shape, nnx.state(new, nnx.Param))
            == jax.tree.map(jnp.shape, ref_state))
    nnx.update(new, ref_state)
    ct = jax.random.normal(jax.random.key(1), (2, 3, 3, cout))

    def run(module):
      graphdef, params = nnx.split(module)
      y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
      grads, dx = vjp(ct)
      return y, dx, grads["kernel"][...], grads["bias"][...]

    for g, r in zip(run(new), run(ref)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)
    assert bool(calls) == wide


def test_deblurgan_generator_same_numbers_as_with_xla_convolutions():
  """The whole DeblurGAN generator (wide enough that its residual and up convs take the im2col
  path, its up convs the sub-pixel one) against the same network built with XLA's own
  convolutions: same parameters, outputs and gradients."""
  from fdeblur.models.deblurgan import DeblurGANGenerator  # pylint: disable=import-outside-toplevel
  new = DeblurGANGenerator(ngf=32, n_blocks=1, dropout=0.0, rngs=nnx.Rngs(0))
  with layers.xla_convolutions():
    ref = DeblurGANGenerator(ngf=32, n_blocks=1, dropout=0.0, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))

  def value_and_grads(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss = lambda p: jnp.mean(jnp.abs(nnx.merge(graphdef, p, rest)(images) - 0.5))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)

  (l_new, g_new), (l_ref, g_ref) = value_and_grads(new), value_and_grads(ref)
  np.testing.assert_allclose(float(l_new), float(l_ref), rtol=1e-6)
  # relative to the largest gradient: the biases before instance norms have (rounding-level)
  # zero gradients
  scale = max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(g_ref))
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * scale)
