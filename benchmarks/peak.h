// The multiply-add throughput of this machine's cores in a tight loop of
// independent FMA chains, the ceiling every other figure is a fraction of
// (clock and turbo are unknown in a VM, so the ISA alone does not give it):
// fp32 with the widest FMA the CPU has (AVX-512 or AVX2), and bf16 with
// AVX512-BF16's dot products and AMX's tile multiplies where present.
#pragma once

#include <string>
#include <vector>

namespace dptrain::bench {

struct PeakKernel {
  std::string name;       // "fp32 avx512", "bf16 amx", ...
  std::string precision;  // "fp32" or "bf16"
  // Runs `iterations` rounds on this thread; returns the flops done
  // (2 per multiply-add).
  double (*run)(long iterations);
};

// The kernels this CPU (and, for AMX, the kernel's permission) can run.
std::vector<PeakKernel> peak_kernels();

// GFLOP/s of `threads` threads each running `kernel` for about `seconds`,
// pinned to distinct CPUs; the best of `repeats`.
double measure_peak(const PeakKernel& kernel, int threads, double seconds, int repeats);

}  // namespace dptrain::bench
