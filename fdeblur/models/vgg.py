"""VGG19 feature extractor for the perceptual (content) loss of DeblurGAN / Fan & Luo.

Frozen, so it is a pure function of a parameter dict rather than an NNX module: the weights are
passed to the train step as a constant argument and never reach the optimiser. Weights come from
a local file named in the config (nothing is downloaded):
  - `.npz` with arrays `conv1_1/kernel` (HWIO, float32) and `conv1_1/bias`, ... up to the layer used;
  - `.pth` / `.pt`: torchvision's `vgg19` state dict (`features.N.weight`, OIHW); needs torch
    installed (`pip install torch`), converted on load.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

# (name, in, out) of VGG19's convolutions in order; "pool" marks 2x2 max-pooling.
VGG19_LAYERS = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64), "pool",
    ("conv2_1", 64, 128), ("conv2_2", 128, 128), "pool",
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    "pool",
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    "pool",
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
)
# torchvision's `features` index of each convolution.
_TORCH_INDEX = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
                "conv3_2": 12, "conv3_3": 14, "conv3_4": 16, "conv4_1": 19, "conv4_2": 21,
                "conv4_3": 23, "conv4_4": 25, "conv5_1": 28, "conv5_2": 30, "conv5_3": 32,
                "conv5_4": 34}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _layers_upto(layer: str):
  names = [l[0] for l in VGG19_LAYERS if l != "pool"]
  if layer not in names:
    raise ValueError(f"unknown VGG19 layer {layer!r}; one of {names}")
  out = []
  for l in VGG19_LAYERS:
    out.append(l)
    if l != "pool" and l[0] == layer:
      return out
  return out


def random_params(key, layer: str = "conv3_3") -> dict:
  """He-initialised weights: for tests only (a perceptual loss on random features is not VGG's)."""
  params = {}
  for l in _layers_upto(layer):
    if l == "pool":
      continue
    name, cin, cout = l
    key, sub = jax.random.split(key)
    std = np.sqrt(2.0 / (9 * cin))
    params[name] = {"kernel": jax.random.normal(sub, (3, 3, cin, cout)) * std,
                    "bias": jnp.zeros((cout,))}
  return params


def load_params(path: str, layer: str = "conv3_3") -> dict:
  """Loads the convolutions up to `layer` from a local .npz or torchvision .pth file."""
  if not path:
    raise ValueError(
        "config.perceptual.weights is empty: the perceptual loss needs ImageNet VGG19 weights "
        "in a local file (.npz with conv1_1/kernel ... or torchvision's vgg19 .pth); nothing is "
        "downloaded. Name the file with --config.perceptual.weights=PATH, or set "
        "--config.loss.perceptual=0 to train without the perceptual term.")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.perceptual.weights={path!r}: no such file")
  wanted = [l for l in _layers_upto(layer) if l != "pool"]
  if path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"{path} is a PyTorch file: install torch to read it, or convert it "
                        "to .npz (conv1_1/kernel in HWIO, conv1_1/bias, ...)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    arrays = {}
    for name, _, _ in wanted:
      i = _TORCH_INDEX[name]
      arrays[f"{name}/kernel"] = state[f"features.{i}.weight"].numpy().transpose(2, 3, 1, 0)
      arrays[f"{name}/bias"] = state[f"features.{i}.bias"].numpy()
  else:
    arrays = dict(np.load(path))
  params = {}
  for name, cin, cout in wanted:
    k, b = arrays.get(f"{name}/kernel"), arrays.get(f"{name}/bias")
    if k is None or b is None:
      raise KeyError(f"{path}: missing {name}/kernel or {name}/bias")
    if k.shape != (3, 3, cin, cout):
      raise ValueError(f"{path}: {name}/kernel has shape {k.shape}, expected {(3, 3, cin, cout)}")
    params[name] = {"kernel": jnp.asarray(k, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
  return params


def features(params: dict, images: jax.Array, layer: str = "conv3_3") -> jax.Array:
  """VGG19 activations at `layer` (pre-ReLU, as DeblurGAN's conv3_3) of images in [0, 1]."""
  x = (images - IMAGENET_MEAN) / IMAGENET_STD
  for l in _layers_upto(layer):
    if l == "pool":
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      continue
    name = l[0]
    x = jax.lax.conv_general_dilated(x, params[name]["kernel"].astype(x.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = x + params[name]["bias"].astype(x.dtype)
    if name != layer:
      x = jax.nn.relu(x)
  return x
