#!/usr/bin/env bash
# The soak test (not in CI): for MINUTES, `dptrain-launch run` of a real
# config on 2 ranks, again and again, while faults are injected at random
# moments: a rank killed (-9), mpirun killed (-9), the launcher killed (-9)
# and resumed, a rank stalled (SIGSTOP, until the launcher's stall timeout
# restarts the job), the launcher sent SIGTERM (it checkpoints and stops)
# and resumed. Every run must end complete with final weights byte for
# byte those of an undisturbed run, and no temporary or torn file in its
# folder. Prints the faults injected by kind, the restarts and resumes, and
# the time lost per fault (the launchers' own accounting).
#
#   tests/soak/soak.sh [MINUTES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-20}
seed=${2:-1}
RANDOM=$seed
launch=build/launcher/dptrain-launch
config=configs/lenet5_fmnist.textproto
# About 20 s undisturbed; a checkpoint every 100 steps. A job whose
# launcher was killed while one of its ranks was stopped is ended by the
# launcher's session guard once the stall timeout (6 s) is over.
sets=(--set solver.epochs=3 --set checkpoint.every_steps=100 --set runtime.threads=1
      --set runtime.log_every_steps=100)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
launcher=0
declare -A faults=([kill_rank]=0 [kill_mpirun]=0 [kill_launcher]=0 [stall_rank]=0 [sigterm]=0)
kinds=(kill_rank kill_mpirun kill_launcher stall_rank sigterm)
runs=0 identical=0 restarts=0 resumes=0 lost=0
report() {
  echo "soak: $minutes min, seed $seed: $runs runs completed, $identical with final weights identical to the undisturbed run's"
  for k in "${kinds[@]}"; do printf "  %-14s %4d faults\n" "$k" "${faults[$k]}"; done
  echo "  restarts $restarts and job resumes after exit 75 $resumes, as each run's last launcher"
  echo "  counted them; seconds lost to those restarts $lost"
  awk -v l="$lost" -v r="$restarts" 'BEGIN{if (r > 0) printf "  %.1f s lost per restart\n", l / r}'
}
finished=0
cleanup() {
  [ "$launcher" -gt 0 ] && kill -9 "$launcher" 2>/dev/null || true
  pkill -9 -f "$out/" 2>/dev/null || true
  if [ "$finished" -eq 1 ]; then
    rm -rf "$out"
  else
    report
    echo "soak: FAILED; the run folders and logs are kept in $out" >&2
  fi
}
trap cleanup EXIT
lscpu | grep -E "^Model name" || true

# The processes of the run in folder $2 named $1 (by their executable's name,
# so that mpirun, whose arguments name the worker too, is told apart).
of_run() {
  local p
  for p in $(pgrep -x "$1" || true); do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -q -- "--run-dir $2 " && echo "$p"
  done
  return 0
}
workers() { of_run dptrain "$1"; }
start() {  # dir [--resume]: the launcher in the background
  if [ "${2:-}" = --resume ]; then
    $launch run --resume "$1" >>"$1.log" 2>&1 &
  else
    $launch run --np 2 "$config" --run-dir "$1" --stall-timeout 6 --max-restarts 1000 \
      "${sets[@]}" >>"$1.log" 2>&1 &
  fi
  launcher=$!
}
# After the launcher is gone, its workers leave once their channel closes
# (or its session guard kills them).
wait_workers_gone() {
  for _ in $(seq 1 600); do
    [ -z "$(workers "$1")" ] && [ -z "$(of_run mpirun "$1")" ] && return 0
    sleep 0.1
  done
  echo "soak: workers of $1 still there 60 s after their launcher" >&2
  return 1
}

echo "soak: reference run"
$launch run --np 2 "$config" --run-dir "$out/reference" "${sets[@]}" >"$out/reference.log" 2>&1
deadline=$(($(date +%s) + minutes * 60))
while [ "$(date +%s)" -lt "$deadline" ]; do
  dir="$out/run-$runs"
  start "$dir"
  while kill -0 "$launcher" 2>/dev/null; do
    sleep "$((2 + RANDOM % 4)).$((RANDOM % 10))"
    kill -0 "$launcher" 2>/dev/null || break
    kind=${kinds[$((RANDOM % ${#kinds[@]}))]}
    pids=($(workers "$dir"))
    case $kind in
      kill_rank | stall_rank)
        [ ${#pids[@]} -eq 2 ] || continue  # between starts: nothing to hit
        victim=${pids[$((RANDOM % 2))]}
        # The victim may have ended since it was looked up (a restart).
        if [ "$kind" = kill_rank ]; then
          kill -9 "$victim" 2>/dev/null || continue
        else
          kill -STOP "$victim" 2>/dev/null || continue
        fi
        ;;
      kill_mpirun)
        m=$(of_run mpirun "$dir" | head -1)
        [ -n "$m" ] || continue
        kill -9 "$m" 2>/dev/null || continue
        ;;
      kill_launcher)
        kill -9 "$launcher" 2>/dev/null || true
        wait "$launcher" 2>/dev/null || true
        wait_workers_gone "$dir"
        start "$dir" --resume
        ;;
      sigterm)
        kill -TERM "$launcher" 2>/dev/null || true
        code=0
        wait "$launcher" || code=$?
        [ "$code" -eq 75 ] || [ "$code" -eq 0 ] || { echo "soak: SIGTERM gave exit $code" >&2; exit 1; }
        wait_workers_gone "$dir"
        start "$dir" --resume
        ;;
    esac
    faults[$kind]=$((faults[$kind] + 1))
  done
  code=0
  wait "$launcher" || code=$?
  launcher=0
  [ "$code" -eq 0 ] || { echo "soak: run $runs ended with exit $code (see $dir.log)" >&2; tail -5 "$dir.log" >&2; exit 1; }
  runs=$((runs + 1))
  if cmp -s "$out/reference/final_weights" "$dir/final_weights"; then
    identical=$((identical + 1))
  else
    echo "soak: run $runs: final weights DIFFER from the undisturbed run's" >&2
  fi
  if [ -n "$(find "$dir" -name '*.tmp')" ]; then
    echo "soak: run $runs left temporary files:" >&2
    find "$dir" -name '*.tmp' >&2
    exit 1
  fi
  summary=$(tr -d ' \n' <"$dir/launcher_summary.json")
  field() { echo "$summary" | sed -nE "s/.*\"$1\":([0-9.e+-]+).*/\1/p"; }
  restarts=$((restarts + $(field restarts || echo 0)))
  resumes=$((resumes + $(field resumes || echo 0)))
  lost=$(awk -v a="$lost" -v b="$(field seconds_lost)" 'BEGIN{print a + (b == "" ? 0 : b)}')
  rm -rf "$dir"
done

[ "$identical" -eq "$runs" ] && [ "$runs" -gt 0 ] || exit 1
finished=1
report
