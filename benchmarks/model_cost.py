"""Parameters and GFLOPs per forward pass of every network, as a markdown table.

    python -m benchmarks.model_cost [--size 256] [--dtype float32] [--only NAME,...]

Parameters: trainable `nnx.Param` entries (a shared module counted once). FLOPs: XLA's cost
analysis of the compiled eval-mode forward of one image (`jax.jit(f).lower(...).compile()
.cost_analysis()["flops"]`): a multiply-add counts 2 (DeblurGAN's 35.1 G multiply-adds at
256² give 70.3 GFLOPs), plus the element-wise work. Nothing runs: models are built abstractly
(nnx.eval_shape) and only compiled.
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from fdeblur.models import count_params  # noqa: E402
from fdeblur.models.deblurgan import DeblurGANGenerator  # noqa: E402
from fdeblur.models.discriminators import (Chrysos2019Discriminator,  # noqa: E402
                                           PatchGANDiscriminator)
from fdeblur.models.hourglass import StackedHourglass  # noqa: E402
from fdeblur.models.identity_gan import IdentityPreservingGAN  # noqa: E402
from fdeblur.models.resnet_deblur import ResNetDeblur  # noqa: E402

# (name, what, constructor(dtype, rngs), forward(model, image), paper / peer figure)
NETWORKS = [
    ("resnet_deblur", "Chrysos 2017: ResNet-50, no max-pool, skips from blocks 1, 2 + top",
     lambda d, r: ResNetDeblur(dtype=d, rngs=r), lambda m, x: m(x),
     "none in the paper; He et al.: ResNet-50 classifier 3.8 G multiply-adds at 224²"),
    ("hourglass", "Newell 2016, 8 stacks, F=256, + full-resolution image head",
     lambda d, r: StackedHourglass(dtype=d, rngs=r), lambda m, x: m(x), "none given"),
    ("chrysos2019", "2019 inference: hourglass + G_bl (Table 3)",
     lambda d, r: IdentityPreservingGAN(dtype=d, rngs=r).generator, lambda m, x: m(x),
     "none given"),
    ("chrysos2019 G_bl", "G_bl alone (6-channel encoder + shared decoder)",
     lambda d, r: IdentityPreservingGAN(dtype=d, rngs=r).g_bl,
     lambda m, x: m(jnp.concatenate([x, x], -1)), "none given"),
    ("chrysos2019 training", "hourglass + G_bl + G_s (one forward of each stream)",
     lambda d, r: IdentityPreservingGAN(dtype=d, rngs=r), lambda m, x: m.both(x, x),
     "none given"),
    ("deblurgan", "Fan & Luo processor = DeblurGAN G, ngf 64, 6 blocks",
     lambda d, r: DeblurGANGenerator(dtype=d, rngs=r), lambda m, x: m(x),
     "none in the paper; DeblurGAN 6 blocks: 7.84 M"),
    ("deblurgan-9", "DeblurGAN G, 9 blocks (DeblurGAN's default)",
     lambda d, r: DeblurGANGenerator(n_blocks=9, dtype=d, rngs=r), lambda m, x: m(x),
     "DeblurGAN: 11.38 M"),
    ("patchgan", "DeblurGAN PatchGAN D (Fan & Luo), n_layers 3, ndf 64",
     lambda d, r: PatchGANDiscriminator(dtype=d, rngs=r), lambda m, x: m(x),
     "none in the paper; DeblurGAN: 2.76 M"),
    ("chrysos2019 D", "2019 5-layer conditional D (image + blurry, 6 ch)",
     lambda d, r: Chrysos2019Discriminator(dtype=d, rngs=r), lambda m, x: m(x, x)[0],
     "none given"),
]


def cost(build, forward, size, dtype):
  model = nnx.eval_shape(lambda: build(dtype, nnx.Rngs(0)))
  model.eval()
  n_params = count_params(model)
  graph, state = nnx.split(model)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  compiled = jax.jit(lambda s, x: forward(nnx.merge(graph, s), x)).lower(state, image).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0]
  return n_params, float(analysis["flops"])


def define_flags():
  """The benchmark's flags (defined when it runs as a program, so importing it defines none)."""
  flags.DEFINE_integer("size", 256, "Image size.")
  flags.DEFINE_string("dtype", "float32", "Computation dtype.")
  flags.DEFINE_string("only", "", "Comma-separated network names.")


def main(argv):
  del argv
  args = flags.FLAGS
  only = {s.strip() for s in args.only.split(",") if s.strip()}
  dtype = jnp.dtype(args.dtype)
  print(f"| network | what | parameters | GFLOPs / forward at {args.size}² | "
        "papers' (peers') figure |")
  print("|---|---|---:|---:|---|")
  for name, what, build, forward, paper in NETWORKS:
    if only and name not in only:
      continue
    n, flops = cost(build, forward, args.size, dtype)
    print(f"| `{name}` | {what} | {n:,} ({n / 1e6:.2f} M) | {flops / 1e9:.1f} | {paper} |",
          flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
