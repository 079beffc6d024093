import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdeblur import losses
from fdeblur.models import vgg



def test_gan_losses_against_hand_values():
  real, fake = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
  sp = lambda x: np.log1p(np.exp(x))
  g = losses.gan_loss("gan")
  np.testing.assert_allclose(g.discriminator(real, fake),
                             np.mean(sp(-np.array([2.0, -1.0]))) + np.mean(sp(np.array([0.5, -3.0]))),
                             rtol=1e-6)
  np.testing.assert_allclose(g.generator(fake), np.mean(sp(-np.array([0.5, -3.0]))), rtol=1e-6)
  ls = losses.gan_loss("lsgan")
  np.testing.assert_allclose(ls.discriminator(real, fake),
                             0.5 * np.mean([(2 - 1) ** 2, (-1 - 1) ** 2]) + 0.5 * np.mean([0.25, 9]),
                             rtol=1e-6)
  np.testing.assert_allclose(ls.generator(fake), 0.5 * np.mean([0.25, 16.0]), rtol=1e-6)
  w = losses.gan_loss("wgan_gp")
  np.testing.assert_allclose(w.discriminator(real, fake), -1.25 - 0.5, rtol=1e-6)
  np.testing.assert_allclose(w.generator(fake), 1.25, rtol=1e-6)
  with pytest.raises(ValueError, match="config.gan.kind"):
    losses.gan_loss("hinge")


def test_gradient_penalty_matches_finite_differences():
  rng = np.random.default_rng(0)
  w1 = rng.normal(size=(12, 5))
  w2 = rng.normal(size=(5,))
  critic = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2  # [B]
  real = rng.uniform(size=(3, 2, 2, 3)).astype(np.float32)
  fake = rng.uniform(size=(3, 2, 2, 3)).astype(np.float32)
  key = jax.random.key(7)
  gp = float(losses.gradient_penalty(critic, jnp.asarray(real), jnp.asarray(fake), key))
  # the same interpolation points, gradients by central differences in float64
  eps = np.asarray(jax.random.uniform(key, (3, 1, 1, 1), jnp.float32), np.float64)
  x_hat = eps * real + (1 - eps) * fake
  f = lambda x: np.tanh(x.reshape(-1) @ w1) @ w2
  norms = []
  for b in range(3):
    grad = np.zeros(12)
    flat = x_hat[b].reshape(-1)
    for i in range(12):
      d = np.zeros(12)
      d[i] = 1e-6
      grad[i] = (f(flat + d) - f(flat - d)) / 2e-6
    norms.append(np.linalg.norm(grad))
  np.testing.assert_allclose(gp, np.mean((np.array(norms) - 1) ** 2), rtol=1e-4)


def test_gradient_l1_and_projection():
  x = jnp.zeros((1, 3, 3, 1)).at[0, 1, 1, 0].set(1.0)
  y = jnp.zeros((1, 3, 3, 1))
  # the single bright pixel has 2 vertical and 2 horizontal unit differences out of 6 each
  np.testing.assert_allclose(losses.gradient_l1(x, y), 0.5 * (2 / 6 + 2 / 6), rtol=1e-6)
  np.testing.assert_allclose(losses.projection(jnp.ones((2, 4)), jnp.zeros((2, 4))), 1.0)


def test_vgg_weights_file_roundtrip_and_errors(tmp_path):
  params = vgg.random_params(jax.random.key(0), "conv2_1")
  arrays = {f"{k}/{n}": np.asarray(v) for k, d in params.items() for n, v in d.items()}
  path = tmp_path / "vgg19.npz"
  np.savez(path, **arrays)
  loaded = vgg.load_params(str(path), "conv2_1")
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3))
  np.testing.assert_allclose(vgg.features(loaded, x, "conv2_1"), vgg.features(params, x, "conv2_1"),
                             rtol=1e-6)
  assert vgg.features(loaded, x, "conv2_1").shape == (1, 8, 8, 128)
  with pytest.raises(ValueError, match="config.perceptual.weights"):
    vgg.load_params("")
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    vgg.load_params(str(tmp_path / "nope.npz"))
  with pytest.raises(KeyError, match="conv2_2"):
    vgg.load_params(str(path), "conv3_3")  # the file stops at conv2_1


def test_psnr_loss_is_the_floored_psnr_deficit_per_image():
  rng = np.random.default_rng(0)
  target = rng.uniform(size=(3, 8, 8, 3))
  err = np.stack([np.full((8, 8, 3), 0.1), np.full((8, 8, 3), 0.01), np.zeros((8, 8, 3))])
  pred = target + err
  mse = np.mean(err.astype(np.float64) ** 2, axis=(1, 2, 3))  # 20 dB, 40 dB, perfect
  want = np.mean(10 * np.log10(1 + mse / 1e-4))
  np.testing.assert_allclose(float(losses.pixel_loss("psnr")(jnp.asarray(pred), jnp.asarray(target))),
                             want, rtol=1e-5)
  np.testing.assert_allclose(want, (10 * np.log10(101) + 10 * np.log10(2)) / 3)
  # the near-sharp image's gradient outweighs L2's weighting by (MSE_blurred + floor) / floor
  g = jax.grad(losses.psnr)(jnp.asarray(pred), jnp.asarray(target))
  per_pixel = np.abs(np.asarray(g))[:, 0, 0, 0] / np.abs(err[:, 0, 0, 0] + 1e-30)
  np.testing.assert_allclose(per_pixel[1] / per_pixel[0], (1e-2 + 1e-4) / (1e-4 + 1e-4), rtol=1e-4)
  # config.loss.psnr_floor: 1e-3 (30 dB) weighs the 20 dB image (1e-2 + 1e-3) / (1e-4 + 1e-3)
  # = 10x less than the 40 dB one, against 50x at the default floor
  floored = losses.pixel_loss("psnr", 1e-3)
  np.testing.assert_allclose(float(floored(jnp.asarray(pred), jnp.asarray(target))),
                             np.mean(10 * np.log10(1 + mse / 1e-3)), rtol=1e-5)
  g = jax.grad(floored)(jnp.asarray(pred), jnp.asarray(target))
  per_pixel = np.abs(np.asarray(g))[:, 0, 0, 0] / np.abs(err[:, 0, 0, 0] + 1e-30)
  np.testing.assert_allclose(per_pixel[1] / per_pixel[0], (1e-2 + 1e-3) / (1e-4 + 1e-3), rtol=1e-4)
  with pytest.raises(ValueError, match="config.loss.psnr_floor=0.0"):
    losses.pixel_loss("psnr", 0.0)
  with pytest.raises(ValueError, match="config.loss.pixel='l3'"):
    losses.pixel_loss("l3")
