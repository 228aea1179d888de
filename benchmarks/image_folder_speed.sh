#!/usr/bin/env bash
# What reading an image folder of PNGs costs a run against the IDX files
# holding the same images: the wall time of the same training steps of
# CONFIG (convbn_fmnist) on 2 ranks x 1 thread, from Fashion-MNIST's IDX
# files and from a folder of its 70,000 PNGs (written first by
# write_image_folder), interleaved for several rounds; the ratio is the
# median over rounds of folder / IDX, for the run's own wall time (its last
# train record: steps only) and for the process's (listing and reading
# the data included).
#
#   benchmarks/image_folder_speed.sh [CONFIG] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh
config=${1:-configs/convbn_fmnist.textproto}
steps=${2:-937}
rounds=${3:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true
cmake --build build --target write_image_folder dptrain >/dev/null
build/benchmarks/write_image_folder "$out/folder"
folder=(--set data.format=IMAGE_FOLDER --set data.path="$out/folder"
        --set data.image_folder.channels=1 --set data.image_folder.height=28
        --set data.image_folder.width=28)

measure() {  # label flags... -> "run_wall process_wall"
  local label=$1
  shift
  local t0 t1
  t0=$(date +%s.%N)
  mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1 build/dist/dptrain train "$config" \
    --run-dir "$out/$label" --set solver.max_steps="$steps" --set runtime.eval_every_epochs=0 \
    --set data.test_limit=1000 --log-level warn --set runtime.log_every_steps=100 \
    --set checkpoint.every_epochs=0 "$@" >/dev/null
  t1=$(date +%s.%N)
  local wall
  wall=$(grep '"kind":"train"' "$out/$label/metrics.jsonl" | tail -1 |
    sed -E 's/.*"wall_time":([0-9.e+-]+).*/\1/')
  rm -rf "${out:?}/$label"
  echo "$wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')"
}

printf "%-6s %12s %12s %12s %12s %8s\n" round "idx run s" "png run s" "idx proc s" "png proc s" ratio
for ((r = 1; r <= rounds; ++r)); do
  read -r idx_run idx_proc < <(measure idx)
  read -r png_run png_proc < <(measure png "${folder[@]}")
  ratio=$(awk -v a="$idx_run" -v b="$png_run" 'BEGIN{print b / a}')
  printf "%-6s %12.3f %12.3f %12.3f %12.3f %8.3f\n" "$r" "$idx_run" "$png_run" "$idx_proc" \
    "$png_proc" "$ratio"
  echo "$ratio $(awk -v a="$idx_proc" -v b="$png_proc" 'BEGIN{print b / a}')" >>"$out/rounds"
done
printf "median wall time, PNG folder / IDX (%s steps): run %.3fx, process %.3fx\n" "$steps" \
  "$(awk '{print $1}' "$out/rounds" | median)" "$(awk '{print $2}' "$out/rounds" | median)"
