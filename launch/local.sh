#!/usr/bin/env bash
# N training processes on this machine, talking over 127.0.0.1 (jax.distributed, gloo collectives
# between CPU devices), each with M simulated CPU devices: the multi-host code path without a
# cluster. Every process runs the same `python -m fdeblur.main` with its own --process_id.
#
#   CONFIG=configs/quickstart.py:tiny WORKDIR=/tmp/fdeblur_local launch/local.sh \
#       [--config.train.num_steps=4 ...]          # extra arguments go to every process
#
# Variables:
#   CONFIG               (required) configs/NAME.py[:variant]
#   WORKDIR              (required) checkpoints, logs, report; one directory shared by all
#                        processes (a local path here; gs://... also works)
#   NUM_PROCESSES        processes to start (default 2)
#   DEVICES_PER_PROCESS  CPU devices per process, via XLA_FLAGS (default 2)
#   PORT                 coordinator port on 127.0.0.1 (default: a free port)
#   PYTHON               interpreter (default: python3)
#   MODE                 train | evaluate (default train)
# Output: each line is prefixed with [pI]. The script waits for all processes; when one fails the
# others are stopped and the script exits with the failing process's status.
set -euo pipefail

: "${CONFIG:?set CONFIG to configs/NAME.py[:variant]}"
: "${WORKDIR:?set WORKDIR to the run directory (shared by all processes)}"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-2}"
PYTHON="${PYTHON:-python3}"
MODE="${MODE:-train}"
case "$NUM_PROCESSES$DEVICES_PER_PROCESS" in
  *[!0-9]*) echo "local.sh: NUM_PROCESSES and DEVICES_PER_PROCESS must be integers" >&2; exit 2;;
esac
if [ "$NUM_PROCESSES" -lt 1 ] || [ "$DEVICES_PER_PROCESS" -lt 1 ]; then
  echo "local.sh: NUM_PROCESSES and DEVICES_PER_PROCESS must be >= 1" >&2; exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${PORT:-}" ]; then
  PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

# Each process gets DEVICES_PER_PROCESS CPU devices: drop any device count already in XLA_FLAGS.
xla_flags=""
for f in ${XLA_FLAGS:-}; do
  case "$f" in --xla_force_host_platform_device_count=*) ;; *) xla_flags="$xla_flags $f";; esac
done
export XLA_FLAGS="${xla_flags# } --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
export XLA_FLAGS="${XLA_FLAGS# }"
export JAX_PLATFORMS=cpu
export PYTHONUNBUFFERED=1

echo "local.sh: $NUM_PROCESSES processes x $DEVICES_PER_PROCESS CPU devices, coordinator" \
     "127.0.0.1:$PORT, workdir $WORKDIR"

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  "$PYTHON" -m fdeblur.main --config="$CONFIG" --workdir="$WORKDIR" --mode="$MODE" \
      --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES" \
      --process_id="$i" "$@" \
      > >(while IFS= read -r line || [ -n "$line" ]; do printf '[p%d] %s\n' "$i" "$line"; done) 2>&1 &
  pids+=("$!")
done

# Wait for all; the first failure stops the others (they would block in collectives otherwise).
status=0
remaining=("${pids[@]}")
while [ "${#remaining[@]}" -gt 0 ]; do
  still=()
  for idx in "${!remaining[@]}"; do
    p="${remaining[$idx]}"
    if kill -0 "$p" 2>/dev/null; then
      still+=("$p")
    else
      rc=0; wait "$p" || rc=$?
      if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
        for j in "${!pids[@]}"; do [ "${pids[$j]}" = "$p" ] && failed=$j; done
        echo "local.sh: process ${failed:-?} (pid $p) exited with status $rc; stopping the others" >&2
        stop_all
      fi
    fi
  done
  remaining=("${still[@]+"${still[@]}"}")
  [ "${#remaining[@]}" -gt 0 ] && sleep 0.5
done
wait 2>/dev/null || true  # the output prefixers
if [ "$status" -eq 0 ]; then
  echo "local.sh: all $NUM_PROCESSES processes finished"
fi
exit "$status"
