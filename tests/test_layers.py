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
  """fn(x, w), d<fn, ct>/dx, d<fn, ct>/dw, as one jit-compiled program (as the train step runs
  them; op by op, every primitive of every shape would be compiled on its own, which took most of
  this file's time)."""
  def value_and_grads(x, w, ct):
    y, vjp = jax.vjp(fn, x, w)
    return (y, *vjp(ct))
  return jax.jit(value_and_grads)(x, w, ct)


def _assert_close(got, want, what, tolerance=2e-6):
  """Equal to `tolerance` times the largest value of each reference array."""
  for g, r, name in zip(got, want, ("output", "input grad", "kernel grad")):
    assert g.shape == r.shape, f"{what}: {name} shape {g.shape} != {r.shape}"
    scale = float(jnp.max(jnp.abs(r))) or 1.0
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=tolerance * scale,
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

  got, want = _layer_value_and_grads(new, x, ct), _layer_value_and_grads(ref, x, ct)
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


def _layer_value_and_grads(module, x, ct):
  """module(x), d<module(x), ct>/dx and the gradients of its kernel and bias, in one jit-compiled
  program (traced at the call: a layers.target_platform around the call applies)."""
  graphdef, params = nnx.split(module)

  def value_and_grads(params, x, ct):
    y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    grads, dx = vjp(ct)
    return y, dx, grads["kernel"][...], grads["bias"][...]
  return jax.jit(value_and_grads)(params, x, ct)


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

    for g, r in zip(_layer_value_and_grads(new, x, ct), _layer_value_and_grads(ref, x, ct)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)
    assert bool(calls) == wide


def test_deblurgan_generator_same_numbers_as_with_xla_convolutions():
  """The whole DeblurGAN generator (wide enough that its residual convs take the Winograd path
  and its up convs the sub-pixel one through im2col) against the same network built with XLA's
  own convolutions: same parameters, outputs and gradients."""
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


def _conv_f64(x, w, stride, padding, ct):
  """float64 NumPy reference: y = conv(x, w) (NHWC, HWIO, explicit padding), and the gradients
  of <y, ct> with respect to x and w."""
  x, w, ct = (np.asarray(a, np.float64) for a in (x, w, ct))
  kh, kw = w.shape[:2]
  (lo_h, hi_h), (lo_w, hi_w) = padding
  xp = np.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  oh = (xp.shape[1] - kh) // stride + 1
  ow = (xp.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
  dxp, dw = np.zeros_like(xp), np.zeros_like(w)
  for i in range(kh):
    for j in range(kw):
      win = (slice(None), slice(i, i + stride * (oh - 1) + 1, stride),
             slice(j, j + stride * (ow - 1) + 1, stride))
      y += np.einsum("bhwc,co->bhwo", xp[win], w[i, j])
      dw[i, j] = np.einsum("bhwc,bhwo->co", xp[win], ct)
      dxp[win] += np.einsum("bhwo,co->bhwc", ct, w[i, j])
  return y, dxp[:, lo_h:xp.shape[1] - hi_h, lo_w:xp.shape[2] - hi_w], dw


@pytest.mark.parametrize("form", ["conv_tap_matmul", "conv_im2col"])
@pytest.mark.parametrize("cin,cout,kernel,stride,padding", [
    (5, 3, (7, 7), 1, ((0, 0), (0, 0))),  # DeblurGAN's head (after its reflect pad)
    (3, 6, (7, 7), 2, ((3, 3), (3, 3))),  # the hourglass / ResNet stem
    (6, 2, (5, 7), 2, ((2, 1), (0, 3))),
    (4, 3, (5, 5), 1, "SAME")])
def test_wide_kernel_forms_match_lax_and_float64(form, cin, cout, kernel, stride, padding):
  """The matrix-product forms of a wide-kernel convolution: outputs and both gradients equal to
  lax's convolution (float32 tolerance) and to a float64 NumPy reference."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 11, 9, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((*kernel, cin, cout)), jnp.float32)
  ref_fn = lambda x, w: lax.conv_general_dilated(x, w, (stride,) * 2, padding,  # noqa: E731
                                                 dimension_numbers=NHWC)
  new_fn = lambda x, w: getattr(layers, form)(x, w, (stride,) * 2, padding)  # noqa: E731
  y = ref_fn(x, w)
  ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  got = _value_and_grads(new_fn, x, w, ct)
  what = f"{form} {cin}->{cout} kernel {kernel} stride {stride} padding {padding}"
  _assert_close(got, _value_and_grads(ref_fn, x, w, ct), what)
  pads = (lax.padtype_to_pads(x.shape[1:3], kernel, (stride,) * 2, padding)
          if isinstance(padding, str) else padding)
  _assert_close(got, _conv_f64(x, w, stride, pads, ct), what + " (float64)")


@pytest.mark.parametrize("target,cin,cout,form", [
    ("cpu", 3, 8, None),  # a stem: XLA's convolution (its im2col form is slower at ngf 16)
    ("cpu", 8, 3, "conv_tap_matmul"),  # a head: taps of the 3-channel output
    ("tpu", 8, 3, None),  # XLA's convolution
    ("gpu", 3, 8, None),
    ("cpu", 8, 8, None)])  # not few channels
def test_wide_kernel_conv_layer_follows_the_target_platform(monkeypatch, target, cin, cout,
                                                            form):
  """layers.Conv with a 7x7 kernel: the formulation of the platform traced for
  (layers.target_platform, as the train step sets it for its mesh), the same parameters,
  outputs and gradients as nnx.Conv."""
  calls = []
  for name in ("conv_im2col", "conv_tap_matmul"):
    real = getattr(layers, name)
    monkeypatch.setattr(layers, name, lambda *a, _n=name, _r=real, **k: calls.append(_n)
                        or _r(*a, **k))
  pad = ((3, 3), (3, 3))
  new = layers.Conv(cin, cout, (7, 7), padding=pad, rngs=nnx.Rngs(0))
  ref = nnx.Conv(cin, cout, (7, 7), padding=pad, preferred_element_type=jnp.float32,
                 rngs=nnx.Rngs(1))
  ref_state = nnx.state(ref, nnx.Param)
  assert jax.tree.map(jnp.shape, nnx.state(new, nnx.Param)) == jax.tree.map(jnp.shape, ref_state)
  nnx.update(new, ref_state)  # a checkpoint of nnx.Conv
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, cin))
  ct = jax.random.normal(jax.random.key(1), (2, 9, 9, cout))

  with layers.target_platform(target):
    assert layers.platform() == target
    got = _layer_value_and_grads(new, x, ct)
  assert layers.platform() == jax.default_backend()
  assert calls == ([form] if form else [])
  for g, r in zip(got, _layer_value_and_grads(ref, x, ct)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("batch,height,width,cin,cout,padding", [
    (2, 10, 10, 3, 4, "VALID"),  # whole tiles at tile 4 (DeblurGAN's residual: after its pad)
    (2, 9, 12, 5, 6, "SAME"),  # odd sizes: padded to whole tiles and cropped
    (1, 3, 3, 4, 3, "VALID"),  # one output pixel
    (1, 4, 7, 2, 5, ((2, 0), (1, 3)))])
def test_winograd_conv_matches_lax_and_float64(tile, batch, height, width, cin, cout, padding):
  """conv_winograd (forward and its custom VJP: input and kernel gradients) equal to lax's
  convolution and to a float64 NumPy reference, within F(m, 3)'s float32 rounding."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((batch, height, width, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)), jnp.float32)
  ref_fn = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding,  # noqa: E731
                                                 dimension_numbers=NHWC)
  new_fn = lambda x, w: layers.conv_winograd(x, w, (1, 1), padding, tile=tile)  # noqa: E731
  y = ref_fn(x, w)
  ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  got = _value_and_grads(new_fn, x, w, ct)
  what = f"F({tile}, 3) {x.shape} {cin}->{cout} padding {padding}"
  tolerance = 2e-6 if tile == 2 else 1e-5  # F(4, 3)'s transforms round more (1/2, -2, 1/6)
  _assert_close(got, _value_and_grads(ref_fn, x, w, ct), what, tolerance)
  pads = (lax.padtype_to_pads(x.shape[1:3], (3, 3), (1, 1), padding)
          if isinstance(padding, str) else padding)
  _assert_close(got, _conv_f64(x, w, 1, pads, ct), what + " (float64)", tolerance)


def test_winograd_matrices_are_exact_minimal_filters():
  """F(m, 3) in float64: AT [(G g) ⊙ (BT d)] is the 3-tap correlation of the tile d."""
  rng = np.random.default_rng(3)
  for m in (2, 4):
    at, g, bt = (np.asarray(a) for a in layers.winograd_matrices(m))
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
    d, f = rng.standard_normal(m + 2), rng.standard_normal(3)
    np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), np.correlate(d, f, "valid"),
                               rtol=0, atol=1e-13)


def test_winograd_conv_rejects_other_kernels():
  x, w = jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match="3x3 kernel at stride 1.*strides \\(2, 2\\)"):
    layers.conv_winograd(x, w, (2, 2), "SAME")
  with pytest.raises(ValueError, match="kernel \\(5, 5\\)"):
    layers.conv_winograd(x, jnp.zeros((5, 5, 2, 2)), (1, 1), "SAME")
  with pytest.raises(ValueError, match="tile 3"):
    layers.conv_winograd(x, w, (1, 1), "SAME", tile=3)


@pytest.mark.parametrize("target,cin,stride,dtype,form", [
    ("cpu", 64, 1, jnp.float32, "conv_winograd"),  # DeblurGAN's residual conv at ngf 16
    ("cpu", 32, 1, jnp.float32, None),  # narrower: XLA's convolution
    ("cpu", 128, 2, jnp.float32, "conv_im2col"),  # stride 2, wide: im2col
    ("cpu", 64, 1, jnp.bfloat16, None),  # Winograd's transforms in bfloat16 would round too much
    ("tpu", 64, 1, jnp.float32, None)])
def test_3x3_conv_layer_takes_winograd_on_the_cpu(monkeypatch, target, cin, stride, dtype, form):
  """layers.Conv 3x3 (cin -> cin): the hook's formulation for the platform, width, stride and
  dtype, with nnx.Conv's parameters, outputs and gradients."""
  calls = []
  for name in ("conv_im2col", "conv_winograd"):
    real = getattr(layers, name)
    monkeypatch.setattr(layers, name, lambda *a, _n=name, _r=real, **k: calls.append(_n)
                        or _r(*a, **k))
  kw = dict(strides=stride, padding=((1, 1), (1, 1)), dtype=dtype,
            preferred_element_type=jnp.float32)
  new = layers.Conv(cin, cin, (3, 3), **kw, rngs=nnx.Rngs(0))
  ref = nnx.Conv(cin, cin, (3, 3), **kw, rngs=nnx.Rngs(1))
  ref_state = nnx.state(ref, nnx.Param)
  assert jax.tree.map(jnp.shape, nnx.state(new, nnx.Param)) == jax.tree.map(jnp.shape, ref_state)
  nnx.update(new, ref_state)
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, cin))
  ct = jax.random.normal(jax.random.key(1), (2, 9 // stride + (stride > 1), 9 // stride
                                             + (stride > 1), cin))
  with layers.target_platform(target):
    got = _layer_value_and_grads(new, x, ct)
  assert calls == ([form] if form else [])
  tol = 5e-2 if dtype == jnp.bfloat16 else 1e-5
  for g, r in zip(got, _layer_value_and_grads(ref, x, ct)):
    scale = float(jnp.max(jnp.abs(r))) or 1.0
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(r, np.float32), rtol=0,
                               atol=tol * scale)


def test_batch_norm_is_nnx_batch_norm_with_the_same_numbers():
  """layers.BatchNorm stores its running statistics its own way (tracing speed): its outputs,
  gradients and statistics must stay nnx.BatchNorm's (momentum 0.9, eps 1e-5, float32), in
  training and in evaluation, jitted as the train step runs it."""
  ours = layers.BatchNorm(5, rngs=nnx.Rngs(0))
  stock = nnx.BatchNorm(5, momentum=0.9, epsilon=1e-5, dtype=jnp.float32, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  scale = jnp.asarray(rng.uniform(0.5, 2.0, 5), jnp.float32)
  bias = jnp.asarray(rng.normal(size=5), jnp.float32)
  for bn in (ours, stock):  # moved off 1 and 0, so that a swapped scale and bias would show
    bn.scale.set_value(scale)
    bn.bias.set_value(bias)

  @nnx.jit
  def train_step(bn, x):
    def loss(bn):
      y = bn(x, use_running_average=False)
      return jnp.sum(y * jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)), y
    (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(bn)
    return y, grads

  for i in range(3):  # the running statistics move towards each batch's
    x = jnp.asarray(3.0 * rng.standard_normal((4, 6, 7, 5)) + i, jnp.float32)
    y_ours, g_ours = train_step(ours, x)
    y_stock, g_stock = train_step(stock, x)
    np.testing.assert_array_equal(y_ours, y_stock)
    for name in ("scale", "bias"):
      np.testing.assert_array_equal(getattr(g_ours, name)[...], getattr(g_stock, name)[...])
    for name in ("mean", "var"):
      np.testing.assert_array_equal(getattr(ours, name)[...], getattr(stock, name)[...])
  assert not np.allclose(ours.mean[...], 0.0)  # it did update
  x = jnp.asarray(rng.standard_normal((2, 3, 3, 5)), jnp.float32)
  np.testing.assert_array_equal(ours(x, use_running_average=True),
                                stock(x, use_running_average=True))
  # bfloat16 networks: computed in float32, the output cast to the computation dtype
  half = layers.BatchNorm(5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  y = half(x, use_running_average=False)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y, layers.BatchNorm(5, rngs=nnx.Rngs(0))(
      x, use_running_average=False).astype(jnp.bfloat16))
