#include "benchmarks/peak.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

namespace dptrain::bench {
namespace {

// Twelve independent accumulators: more than FMA latency x ports, so the
// loop is bound by throughput, not by a dependency chain.
__attribute__((target("avx512f"))) double fp32_avx512(long iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __asm__ volatile(""
                     : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]),
                       "+v"(acc[5]), "+v"(acc[6]), "+v"(acc[7]), "+v"(acc[8]), "+v"(acc[9]),
                       "+v"(acc[10]), "+v"(acc[11]));
  }
  return 2.0 * 16 * 12 * static_cast<double>(iterations);
}

__attribute__((target("avx2,fma"))) double fp32_avx2(long iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __asm__ volatile(""
                     : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]),
                       "+x"(acc[5]), "+x"(acc[6]), "+x"(acc[7]), "+x"(acc[8]), "+x"(acc[9]),
                       "+x"(acc[10]), "+x"(acc[11]));
  }
  return 2.0 * 8 * 12 * static_cast<double>(iterations);
}

// vdpbf16ps: 16 lanes, each the sum of two bf16 products into fp32.
__attribute__((target("avx512f,avx512bf16"))) double bf16_avx512(long iterations) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, a);
    __asm__ volatile(""
                     : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]),
                       "+v"(acc[5]), "+v"(acc[6]), "+v"(acc[7]), "+v"(acc[8]), "+v"(acc[9]),
                       "+v"(acc[10]), "+v"(acc[11]));
  }
  return 2.0 * 32 * 12 * static_cast<double>(iterations);
}

// AMX: tdpbf16ps on full 16 x 64-byte tiles, C (16 x 16 fp32) += A (16 x
// 32 bf16) B (32 x 16 bf16): 8192 multiply-adds each; four independent
// accumulator tiles.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-bf16"))) double bf16_amx(long iterations) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  alignas(64) static thread_local uint16_t data[16 * 32] = {};
  // GCC 12 does not see ldtilecfg read the struct and drops its stores.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_loadd(7, data, 64);
  for (long it = 0; it < iterations; ++it) {
    _tile_dpbf16ps(0, 4, 5);
    _tile_dpbf16ps(1, 4, 6);
    _tile_dpbf16ps(2, 7, 5);
    _tile_dpbf16ps(3, 7, 6);
  }
  _tile_release();
  return 2.0 * 16 * 16 * 32 * 4 * static_cast<double>(iterations);
}

// Linux hands out AMX tile state only to a process that asks for it.
bool amx_permitted() {
  constexpr long kReqPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqPerm, kXtileData) == 0;
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

}  // namespace

std::vector<PeakKernel> peak_kernels() {
  std::vector<PeakKernel> k;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) k.push_back({"fp32 avx512 fma", "fp32", fp32_avx512});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    k.push_back({"fp32 avx2 fma", "fp32", fp32_avx2});
  if (__builtin_cpu_supports("avx512bf16"))
    k.push_back({"bf16 avx512_bf16 dot", "bf16", bf16_avx512});
  if (__builtin_cpu_supports("amx-bf16") && amx_permitted())
    k.push_back({"bf16 amx tile", "bf16", bf16_amx});
  return k;
}

double measure_peak(const PeakKernel& kernel, int threads, double seconds, int repeats) {
  // Iterations per round, from a short calibration run.
  long per_round = 1 << 16;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    kernel.run(per_round);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.02) {
      per_round = static_cast<long>(static_cast<double>(per_round) * seconds / s);
      break;
    }
    per_round *= 4;
  }
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    std::atomic<int> ready{0};
    std::vector<double> flops(static_cast<size_t>(threads));
    std::vector<std::thread> pool;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        pin(t);
        ready.fetch_add(1);
        while (ready.load() < threads) {
        }
        flops[static_cast<size_t>(t)] = kernel.run(per_round);
      });
    }
    for (std::thread& t : pool) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / s / 1e9);
  }
  return best;
}

}  // namespace dptrain::bench
