#!/usr/bin/env bash
# The sweep bars: the shipped LeNet-5 sweep's wall time, best trial and
# share of the full budget, and that a sweep killed (-9) and resumed twice
# ends with the same leaderboard as one never interrupted.
#
#   benchmarks/sweep_kill_resume.sh [SWEEP_CONFIG] [SECONDS_BEFORE_EACH_KILL]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/sweep_lenet5_fmnist.textproto}
after=${2:-40}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true
launch=build/launcher/dptrain-launch

t0=$(date +%s.%N)
$launch sweep "$config" --run-dir "$out/plain" >"$out/plain.log"
t1=$(date +%s.%N)
tail -1 "$out/plain.log"
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "uninterrupted sweep: %.1f s\n", b - a}'
grep -E '"(trials|best_objective|best_test_accuracy|epochs_run|epochs_full_budget)"' \
  "$out/plain/sweep_summary.json" | tr -d ' \n'
echo

# Twice: start (or resume) in the background, let it run, kill -9 it.
kill_after() {  # args... : run dptrain-launch with them, kill it after $after s
  "$launch" "$@" >>"$out/killed.log" 2>&1 &
  local pid=$!
  sleep "$after"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 3  # the trials' workers checkpoint and leave once their channel closes
}
kill_after sweep "$config" --run-dir "$out/killed"
kill_after sweep --resume "$out/killed"
"$launch" sweep --resume "$out/killed" >>"$out/killed.log" 2>&1
if cmp -s "$out/plain/leaderboard.csv" "$out/killed/leaderboard.csv"; then
  echo "killed -9 twice and resumed: the same leaderboard"
else
  echo "killed -9 twice and resumed: the leaderboards DIFFER"
  diff "$out/plain/leaderboard.csv" "$out/killed/leaderboard.csv" || true
  exit 1
fi
