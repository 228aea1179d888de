#!/usr/bin/env bash
# Weak scaling of dptrain on this machine: images/s (forward, backward,
# allreduce and update, from metrics.jsonl) at a fixed per-rank batch with
# 1 thread per rank, for 1 and 2 ranks over shared memory and over
# loopback TCP, and the share of step time spent waiting for allreduce.
#
#   benchmarks/weak_scaling.sh [CONFIG] [PER_RANK_BATCH] [STEPS] [REPEATS]
#
# The three setups run interleaved, REPEATS rounds of them, so that a slow
# spell on a shared host hits all three alike; the speedups are medians
# over the rounds. Each run also records the load of *other* processes
# while it ran (CPUs kept busy, from /proc/stat minus the run's own CPU
# time): trust rounds where it is near 0.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh
config=${1:-configs/convbn_fmnist.textproto}
batch=${2:-64}
steps=${3:-300}
repeats=${4:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true
ticks=$(getconf CLK_TCK)

busy_seconds() {  # all CPUs' non-idle time since boot
  awk -v t="$ticks" '/^cpu /{print ($2+$3+$4+$7+$8+$9)/t}' /proc/stat
}

measure() {  # ranks label mpi-args... -> "images/s wait others_load"
  local n=$1 label=$2
  shift 2
  local b0 b1 t0 t1 cpu
  b0=$(busy_seconds)
  t0=$(date +%s.%N)
  # bash's `time` reports the CPU time of mpirun and every rank it waited for.
  cpu=$( { TIMEFORMAT='%U %S'; time mpirun -np "$n" --bind-to none -x OMP_NUM_THREADS=1 "$@" \
    build/dist/dptrain train "$config" --run-dir "$out/$label" \
    --set data.batch_size=$((batch * n)) --set solver.max_steps="$steps" \
    --set runtime.log_every_steps=$((steps / 3)) --set data.test_limit=1000 --log-level warn \
    >/dev/null; } 2>&1 |
    awk '{print $1 + $2}')
  t1=$(date +%s.%N)
  b1=$(busy_seconds)
  # The last train record covers the last third of the steps (warm).
  local rate_wait
  rate_wait=$(grep '"kind":"train"' "$out/$label/metrics.jsonl" | tail -1 |
    sed -E 's/.*"images_per_sec":([0-9.e+-]+).*"allreduce_wait_fraction":([0-9.e+-]+).*/\1 \2/')
  rm -rf "${out:?}/$label"
  echo "$rate_wait $(awk -v b="$b1" -v a="$b0" -v c="$cpu" -v t="$t1" -v s="$t0" \
    'BEGIN{o = (b - a - c) / (t - s); printf "%.2f", o < 0 ? 0 : o}')"
}

printf "%-6s %10s %10s %10s %8s %8s %12s %12s\n" "round" "1 rank" "2 shm" "2 tcp" \
  "shm x" "tcp x" "wait shm" "others_load"
for ((r = 1; r <= repeats; ++r)); do
  read -r one _ l1 < <(measure 1 one)
  read -r shm wshm l2 < <(measure 2 shm)
  read -r tcp _ l3 < <(measure 2 tcp --mca btl tcp,self)
  printf "%-6s %10.0f %10.0f %10.0f %8.2f %8.2f %12.3f %12s\n" "$r" "$one" "$shm" "$tcp" \
    "$(awk "BEGIN{print $shm/$one}")" "$(awk "BEGIN{print $tcp/$one}")" "$wshm" "$l1/$l2/$l3"
  echo "$one $shm $tcp $wshm" >>"$out/rounds"
done
printf "median: 1 rank %.0f img/s; 2 ranks shared memory %.2fx, loopback TCP %.2fx; allreduce wait %.3f of step\n" \
  "$(awk '{print $1}' "$out/rounds" | median)" \
  "$(awk '{print $2/$1}' "$out/rounds" | median)" \
  "$(awk '{print $3/$1}' "$out/rounds" | median)" \
  "$(awk '{print $4}' "$out/rounds" | median)"
