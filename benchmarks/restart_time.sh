#!/usr/bin/env bash
# Time lost to one killed rank under dptrain-launch: LeNet-5 on 2 ranks,
# checkpoints every C steps, rank 1 killed (SIGKILL) at step K by
# DPTRAIN_FAULT. From launcher.log and metrics.jsonl:
#   detection  the kill to mpirun's exit (the survivors are ended by mpirun)
#   restart    mpirun's exit to the first new step (back-off, mpirun, data,
#              net, resume): the launcher's seconds_lost
#   redo       the K - C steps done again since the checkpoint
# The kill's moment is estimated as the checkpoint notice at step C plus
# K - C steps at the run's wall time per step. Several rounds, medians.
#
#   benchmarks/restart_time.sh [ROUNDS] [C] [K]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh
rounds=${1:-3}
every=${2:-200}
kill_at=${3:-1100}
config=configs/lenet5_fmnist.textproto
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true
since_midnight() { awk -F'[ :]' '{print $2 * 3600 + $3 * 60 + $4}'; }
ckpt=$((kill_at / every * every))

printf "%-6s %11s %11s %9s %9s %12s\n" round "detection s" "restart s" "redo s" "total s" "final equal"
build/launcher/dptrain-launch run --np 2 --run-dir "$out/plain" "$config" --set solver.epochs=2 \
  --set checkpoint.every_steps="$every" >/dev/null
for ((r = 1; r <= rounds; ++r)); do
  dir="$out/r$r"
  DPTRAIN_FAULT=kill:1:$kill_at build/launcher/dptrain-launch run --np 2 --run-dir "$dir" "$config" \
    --set solver.epochs=2 --set checkpoint.every_steps="$every" >/dev/null
  log="$dir/launcher.log"
  t_ckpt=$(grep " checkpoint ckpt-$(printf %09d "$ckpt") " "$log" | head -1 | since_midnight)
  t_exit=$(grep " job exited: exit 137" "$log" | head -1 | since_midnight)
  t_back=$(grep " progress again at step" "$log" | head -1 | since_midnight)
  # Wall time per step from two train records of the first start.
  step_s=$(grep '"kind":"train"' "$dir/metrics.jsonl" | head -3 | tail -2 |
    sed -E 's/.*"step":([0-9]+).*"wall_time":([0-9.e+-]+).*/\1 \2/' |
    awk 'NR==1{s=$1; t=$2} NR==2{print ($2 - t) / ($1 - s)}')
  equal=$(build/dist/dptrain diff-weights "$out/plain/final_weights" "$dir/final_weights" |
    tail -1 | awk '{print ($2 == 0) ? "yes" : "no"}')
  awk -v c="$t_ckpt" -v e="$t_exit" -v b="$t_back" -v s="$step_s" -v n=$((kill_at - ckpt)) \
    -v r="$r" -v eq="$equal" 'BEGIN{
      k = c + n * s; printf "%-6s %11.2f %11.2f %9.2f %9.2f %12s\n", r, e - k, b - e, n * s, b - k + n * s, eq
      print e - k, b - e, n * s, b - k + n * s > "/dev/stderr"}' 2>>"$out/rounds"
done
printf "median per fault: detection %.2f s, restart %.2f s, redo %.2f s (%d steps), total lost %.2f s\n" \
  "$(awk '{print $1}' "$out/rounds" | median)" "$(awk '{print $2}' "$out/rounds" | median)" \
  "$(awk '{print $3}' "$out/rounds" | median)" $((kill_at - ckpt)) "$(awk '{print $4}' "$out/rounds" | median)"
