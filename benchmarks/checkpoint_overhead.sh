#!/usr/bin/env bash
# What checkpointing costs a run: the wall time of a fixed number of steps
# on 2 ranks (1 thread each) with checkpoints off and with checkpoints
# every epoch and every 500 steps, interleaved for several rounds; the
# overhead is the median over rounds of (on - off) / off. Wall time is the
# run's own (wall_time of its last record: the whole step loop with the
# epoch-end evaluation and the snapshot copies), and the process's
# elapsed time beside it.
#
#   benchmarks/checkpoint_overhead.sh [CONFIG] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh
config=${1:-configs/convbn_fmnist.textproto}
steps=${2:-1500}
rounds=${3:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true

measure() {  # label checkpoint-overrides... -> "run_wall process_wall checkpoints"
  local label=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1 build/dist/dptrain train "$config" \
    --run-dir "$out/$label" --set solver.max_steps="$steps" --set data.test_limit=2000 \
    --log-level warn --set runtime.log_every_steps=100 "$@" >/dev/null
  t1=$(date +%s.%N)
  local wall count
  wall=$(tail -1 "$out/$label/metrics.jsonl" | sed -E 's/.*"wall_time":([0-9.e+-]+).*/\1/')
  count=$(ls "$out/$label" | grep -c '^ckpt-' || true)
  rm -rf "${out:?}/$label"
  echo "$wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}') $count"
}

printf "%-6s %12s %12s %12s %12s %10s\n" round "off run s" "on run s" "off proc s" "on proc s" overhead
for ((r = 1; r <= rounds; ++r)); do
  read -r off_run off_proc _ < <(measure off --set checkpoint.every_epochs=0 --set checkpoint.every_steps=0)
  read -r on_run on_proc kept < <(measure on --set checkpoint.every_epochs=1 --set checkpoint.every_steps=500)
  ratio=$(awk -v a="$off_run" -v b="$on_run" 'BEGIN{print (b - a) / a}')
  printf "%-6s %12.3f %12.3f %12.3f %12.3f %9.2f%%\n" "$r" "$off_run" "$on_run" "$off_proc" "$on_proc" \
    "$(awk -v x="$ratio" 'BEGIN{print 100 * x}')"
  echo "$ratio $(awk -v a="$off_proc" -v b="$on_proc" 'BEGIN{print (b - a) / a}')" >>"$out/rounds"
done
printf "median overhead of checkpoints (every epoch and every 500 steps, %s steps, %s kept): run wall time %.2f%%, process %.2f%%\n" \
  "$steps" "$kept" \
  "$(awk '{print 100 * $1}' "$out/rounds" | median)" "$(awk '{print 100 * $2}' "$out/rounds" | median)"
