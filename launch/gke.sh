#!/usr/bin/env bash
# Render launch/gke_jobset.yaml from these variables and submit it with kubectl (DRY_RUN=1: print
# the rendered JobSet only). Extra arguments go to every process's fdeblur.main.
#
#   IMAGE=us-docker.pkg.dev/my-proj/fdeblur/train:latest CONFIG=configs/fan_luo.py \
#   WORKDIR=gs://my-bucket/runs/fan_luo ACCELERATOR=tpu TPU_ACCELERATOR=tpu-v5-lite-podslice \
#   TPU_TOPOLOGY=4x4 NUM_WORKERS=4 launch/gke.sh --config.train.batch_size=256
#
# Variables:
#   IMAGE             (required) container image with fdeblur and JAX for the accelerator
#   CONFIG            (required) configs/NAME.py[:variant] (inside the image's working directory)
#   WORKDIR           (required) gs://bucket/path for checkpoints, logs, report
#   NUM_WORKERS       (required) pods = JAX processes (TPU: hosts of the slice; GPU: nodes)
#   ACCELERATOR       (required) tpu | gpu
#   TPU_ACCELERATOR   (tpu, required) node label, e.g. tpu-v5-lite-podslice, tpu-v6e-slice,
#                     tpu-v5p-slice
#   TPU_TOPOLOGY      (tpu, required) slice topology, e.g. 4x4, 2x2x2
#   GPU_TYPE          (gpu, required) node label, e.g. nvidia-h100-80gb, nvidia-l4
#   CHIPS_PER_WORKER  chips per pod (default 4 for tpu, 8 for gpu)
#   DATA_DIR          TFDS data_dir, gs://... (--config.dataset.data_dir)
#   JOB_NAME          JobSet name (default fdeblur)
#   COORDINATOR_PORT  default 8476
#   MAX_RESTARTS      default 3
#   NAMESPACE         kubectl namespace (default: the context's)
#   DRY_RUN           1: print the rendered YAML instead of applying it
set -euo pipefail

: "${IMAGE:?set IMAGE to a container image with fdeblur installed}"
: "${CONFIG:?set CONFIG to configs/NAME.py[:variant]}"
: "${WORKDIR:?set WORKDIR to a gs://bucket/path}"
: "${NUM_WORKERS:?set NUM_WORKERS to the number of pods (JAX processes)}"
: "${ACCELERATOR:?set ACCELERATOR to tpu or gpu}"
case "$ACCELERATOR" in
  tpu)
    : "${TPU_ACCELERATOR:?set TPU_ACCELERATOR (e.g. tpu-v5-lite-podslice) with ACCELERATOR=tpu}"
    : "${TPU_TOPOLOGY:?set TPU_TOPOLOGY (e.g. 4x4) with ACCELERATOR=tpu}"
    NODE_SELECTOR="{cloud.google.com/gke-tpu-accelerator: $TPU_ACCELERATOR, cloud.google.com/gke-tpu-topology: $TPU_TOPOLOGY}"
    ACCELERATOR_RESOURCE=google.com/tpu
    CHIPS_PER_WORKER="${CHIPS_PER_WORKER:-4}" ;;
  gpu)
    : "${GPU_TYPE:?set GPU_TYPE (e.g. nvidia-h100-80gb) with ACCELERATOR=gpu}"
    NODE_SELECTOR="{cloud.google.com/gke-accelerator: $GPU_TYPE}"
    ACCELERATOR_RESOURCE=nvidia.com/gpu
    CHIPS_PER_WORKER="${CHIPS_PER_WORKER:-8}" ;;
  *) echo "gke.sh: ACCELERATOR must be tpu or gpu, not '$ACCELERATOR'" >&2; exit 2 ;;
esac
if [[ "$WORKDIR" != gs://* ]]; then
  echo "gke.sh: WORKDIR=$WORKDIR: pods share no disk, use gs://bucket/path" >&2; exit 2
fi
export JOB_NAME="${JOB_NAME:-fdeblur}" COORDINATOR_PORT="${COORDINATOR_PORT:-8476}"
export MAX_RESTARTS="${MAX_RESTARTS:-3}" NODE_SELECTOR ACCELERATOR_RESOURCE CHIPS_PER_WORKER
export IMAGE CONFIG WORKDIR NUM_WORKERS

extra=()
[ -n "${DATA_DIR:-}" ] && extra+=(--config.dataset.data_dir="$DATA_DIR")
extra+=("$@")
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rendered="$(python3 - "$HERE/gke_jobset.yaml" ${extra[@]+"${extra[@]}"} <<'EOF'
import json, os, string, sys
text = open(sys.argv[1]).read()
extra = sys.argv[2:]
# "${ARGS}" (one flow-sequence item) becomes the extra arguments, or disappears.
text = text.replace(', "${ARGS}"', "".join(", " + json.dumps(a) for a in extra))
names = ["JOB_NAME", "IMAGE", "CONFIG", "WORKDIR", "NUM_WORKERS", "NODE_SELECTOR",
         "ACCELERATOR_RESOURCE", "CHIPS_PER_WORKER", "COORDINATOR_PORT", "MAX_RESTARTS"]
values = {}
for n in names:
  v = os.environ[n]
  if '"' in v or "\n" in v:
    sys.exit(f"gke.sh: {n} must not contain quotes or newlines")
  values[n] = v
out = string.Template(text).safe_substitute(values)  # leaves $(JOB_COMPLETION_INDEX) to k8s
left = [n for n in names if "${" + n + "}" in out]
if left:
  sys.exit(f"gke.sh: unfilled {left}")
print(out)
EOF
)"
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%s\n' "$rendered"
  exit 0
fi
command -v kubectl >/dev/null 2>&1 || { echo "gke.sh: kubectl not found" >&2; exit 2; }
ns=()
[ -n "${NAMESPACE:-}" ] && ns=(--namespace="$NAMESPACE")
printf '%s\n' "$rendered" | kubectl apply ${ns[@]+"${ns[@]}"} -f -
echo "gke.sh: submitted JobSet $JOB_NAME; logs: kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=$JOB_NAME"
