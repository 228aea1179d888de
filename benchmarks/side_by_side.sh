#!/usr/bin/env bash
# dptrain against PyTorch on the same net, batch and thread count, side by
# side: interleaved rounds of bench_train_step (one process, THREADS
# OpenMP threads) and benchmarks/pytorch/train_throughput.py in its
# default and channels_last layouts (Debian's python3-torch; OpenBLAS must
# be the BLAS the alternatives system picks). Prints each round and the
# ratio of the medians against PyTorch's faster layout.
#
#   benchmarks/side_by_side.sh MODEL CONFIG [THREADS] [ROUNDS]
#   benchmarks/side_by_side.sh mobilenet configs/mobilenet_fmnist.textproto 2 5
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/lib.sh
model=$1 config=$2 threads=${3:-2} rounds=${4:-5}
lscpu | grep -E "^Model name" || true
update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep -E "^Value" || true
cmake --build build --target bench_train_step >/dev/null
batch=$(grep -oE "batch_size: *[0-9]+" "$config" | head -1 | grep -oE "[0-9]+")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
ours() {
  OMP_NUM_THREADS=$threads build/benchmarks/bench_train_step "$config" --benchmark_min_time=3 2>/dev/null |
    grep -oE "items_per_second=[0-9.]+k?" | head -1 |
    awk -F= '{v=$2; if (v ~ /k$/) {sub(/k$/, "", v); v *= 1000}; print v}'
}
torch() {
  /usr/bin/python3 benchmarks/pytorch/train_throughput.py --model "$model" --threads "$threads" \
    --batch "$batch" --steps 100 --repeats 1 --json "$@" |
    sed -E 's/.*"images_per_sec": ([0-9.]+).*/\1/'
}
printf "%-6s %12s %14s %20s\n" round "dptrain" "pytorch" "pytorch channels_last"
for ((r = 1; r <= rounds; ++r)); do
  a=$(ours) b=$(torch) c=$(torch --channels-last)
  printf "%-6s %12.1f %14.1f %20.1f\n" "$r" "$a" "$b" "$c"
  echo "$a $b $c" >>"$out"
done
a=$(awk '{print $1}' "$out" | median)
b=$(awk '{print $2}' "$out" | median)
c=$(awk '{print $3}' "$out" | median)
awk -v a="$a" -v b="$b" -v c="$c" -v m="$model" -v t="$threads" -v n="$batch" 'BEGIN{
  best = b > c ? b : c
  printf "%s, batch %d, %d threads: dptrain %.1f img/s, pytorch %.1f (default) / %.1f (channels_last): %.2fx the faster\n", m, n, t, a, b, c, a / best}'
