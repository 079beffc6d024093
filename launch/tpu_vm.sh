#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (single host or a multi-host pod slice): create the slice or reuse
# it, put the project on every worker, then run the same command on all workers at once:
#   python -m fdeblur.main --config=$CONFIG --workdir=$WORKDIR --multihost [args]
# jax.distributed.initialize() finds the slice's workers by itself (Cloud TPU metadata).
#
#   TPU_NAME=fdeblur-v5e16 ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-16 \
#   RUNTIME_VERSION=v2-alpha-tpuv5-lite CONFIG=configs/fan_luo.py \
#   WORKDIR=gs://my-bucket/runs/fan_luo DATA_DIR=gs://my-bucket/tfds \
#   launch/tpu_vm.sh [--config.train.batch_size=256 ...]   # extra args go to fdeblur.main
#
# Variables:
#   TPU_NAME          (required) name of the TPU VM slice (reused when it exists)
#   ZONE              (required) e.g. us-central2-b, us-west4-a
#   CONFIG            (required) configs/NAME.py[:variant]
#   WORKDIR           (required) gs://bucket/path: checkpoints (orbax), logs, report. Workers share
#                     no filesystem, so a local path is refused unless ALLOW_LOCAL_WORKDIR=1.
#   ACCELERATOR_TYPE  (required to create) e.g. v4-32, v5litepod-16, v6e-8
#   RUNTIME_VERSION   (required to create) TPU software version, e.g. tpu-ubuntu2204-base,
#                     v2-alpha-tpuv5-lite, v2-alpha-tpuv6e
#   PROJECT           GCP project (default: gcloud's configured project)
#   DATA_DIR          TFDS data_dir (gs://... so that every worker reads the same prepared
#                     dataset); passed as --config.dataset.data_dir
#   SPOT              1: create a Spot slice (preemptible; training resumes from the workdir)
#   INSTALL           copy (default): copy this checkout to every worker and `pip install -e` it;
#                     pip: `pip install "$PIP_SPEC"` on every worker (a wheel, a git URL, ...)
#                     and copy configs/ only
#   PIP_SPEC          with INSTALL=pip: what to install (required then)
#   JAX_SPEC          JAX with the TPU backend (default "jax[tpu]==0.10.2")
#   REMOTE_DIR        project directory on the workers (default fdeblur)
#   SKIP_INSTALL      1: the workers are already set up (re-running a command)
#   MODE              train | evaluate (default train)
#   DRY_RUN           1: print the gcloud commands instead of running them
# The run is attached to this terminal (gcloud ssh to all workers); run the script under tmux or
# nohup for long jobs. A run stopped for any reason resumes from WORKDIR when started again
# (SKIP_INSTALL=1 to skip step 2).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM slice name}"
: "${ZONE:?set ZONE to the TPU zone, e.g. us-central2-b}"
: "${CONFIG:?set CONFIG to configs/NAME.py[:variant]}"
: "${WORKDIR:?set WORKDIR to a gs://bucket/path shared by all workers}"
INSTALL="${INSTALL:-copy}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]==0.10.2}"
REMOTE_DIR="${REMOTE_DIR:-fdeblur}"
MODE="${MODE:-train}"
case "$INSTALL" in
  copy) ;;
  pip) : "${PIP_SPEC:?set PIP_SPEC (what to pip install on the workers) with INSTALL=pip}" ;;
  *) echo "tpu_vm.sh: INSTALL must be copy or pip, not '$INSTALL'" >&2; exit 2 ;;
esac
if [[ "$WORKDIR" != gs://* && "${ALLOW_LOCAL_WORKDIR:-0}" != 1 ]]; then
  echo "tpu_vm.sh: WORKDIR=$WORKDIR is not on shared storage: use gs://bucket/path (every worker" \
       "writes checkpoints there), or set ALLOW_LOCAL_WORKDIR=1 for a single-host slice" >&2
  exit 2
fi
if [ "${DRY_RUN:-0}" != 1 ] && ! command -v gcloud >/dev/null 2>&1; then
  echo "tpu_vm.sh: gcloud not found (install the Google Cloud SDK)" >&2; exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gc_flags=(--zone="$ZONE")
[ -n "${PROJECT:-}" ] && gc_flags+=(--project="$PROJECT")

run() {  # run (or with DRY_RUN=1 print) a command
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
on_all_workers() {  # run a shell command on every worker of the slice, in parallel
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gc_flags[@]}" --worker=all --command="$1"
}

# 1. Create the slice, or reuse it.
if [ "${DRY_RUN:-0}" != 1 ] && \
   gcloud compute tpus tpu-vm describe "$TPU_NAME" "${gc_flags[@]}" >/dev/null 2>&1; then
  echo "tpu_vm.sh: reusing TPU VM $TPU_NAME in $ZONE"
else
  : "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE (e.g. v5litepod-16) to create $TPU_NAME}"
  : "${RUNTIME_VERSION:?set RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite) to create $TPU_NAME}"
  create=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${gc_flags[@]}"
          --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [ "${SPOT:-0}" = 1 ] && create+=(--spot)
  echo "tpu_vm.sh: creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE) in $ZONE"
  run "${create[@]}"
fi

# 2. The project on every worker (the same version everywhere: all processes compile one program).
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  tmpdir="$(mktemp -d)"
  trap 'rm -rf "$tmpdir"' EXIT
  tarball="$tmpdir/fdeblur.tar.gz"
  if [ "$INSTALL" = copy ]; then
    # Tracked and untracked-but-not-ignored files: what this checkout would commit.
    (cd "$ROOT" && git ls-files -co --exclude-standard -z | tar --null -czf "$tarball" -T -)
    install="python3 -m pip install -q '$JAX_SPEC' -e ~/$REMOTE_DIR"
  else
    # The package comes from PIP_SPEC; the config files (not part of the package) from here.
    (cd "$ROOT" && tar -czf "$tarball" configs)
    install="python3 -m pip install -q '$JAX_SPEC' '$PIP_SPEC'"
  fi
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:fdeblur.tar.gz" "${gc_flags[@]}" \
      --worker=all
  on_all_workers "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && \
tar -xzf ~/fdeblur.tar.gz -C ~/$REMOTE_DIR && $install"
fi

# 3. The same command on every worker; jax.distributed detects the slice (--multihost).
args=(python3 -m fdeblur.main --config="$CONFIG" --workdir="$WORKDIR" --mode="$MODE" --multihost)
[ -n "${DATA_DIR:-}" ] && args+=(--config.dataset.data_dir="$DATA_DIR")
args+=("$@")
printf -v command ' %q' "${args[@]}"
echo "tpu_vm.sh: running on all workers of $TPU_NAME:$command"
on_all_workers "cd ~/$REMOTE_DIR &&$command"
