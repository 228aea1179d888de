// Our own BatchNorm loops (core/layers/batch_norm_loops.h) on their own, at
// the channels-last shapes of ResNet-50 at batch 32, f32 and bf16: time per
// call and the bytes each pass moves per second (bytes_per_second counts
// every tensor read or written once per pass). Those shapes are the ones
// AMX's bf16 convolutions leave; elsewhere the net's BatchNorms run
// oneDNN's blocked kernels, so a step never shows these loops, and this
// measures them on any CPU. --simd runs the copy of the loops for another
// instruction set this CPU runs (avx512bf16, avx512, avx2, sse2; the best
// by default), which the label names.
//
//   OMP_NUM_THREADS=2 build/benchmarks/bench_loops [--simd=NAME] [--benchmark_filter=REGEX ...]
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "core/aligned_array.h"
#include "core/layers/batch_norm_loops.h"
#include "core/layers/relu_gradient_loops.h"

namespace dptrain {
namespace {

constexpr int64_t kBatch = 32;

Simd simd = best_simd();

// One BatchNorm's tensors: x, y, dy, and the per-channel vectors.
struct Tensors {
  explicit Tensors(benchmark::State& state)
      : channels(state.range(0)),
        size(state.range(1)),
        bf16(state.range(2) != 0),
        elements(kBatch * channels * size * size),
        bytes(elements * (bf16 ? 2 : 4)),
        x(static_cast<size_t>(bytes)),
        y(static_cast<size_t>(bytes)),
        dy(static_cast<size_t>(bytes)),
        other(static_cast<size_t>(bytes)),
        gamma(static_cast<size_t>(channels), 1.f),
        beta(gamma.size(), 0.1f),
        mean(gamma.size()),
        var(gamma.size()),
        dgamma(gamma.size()),
        dbeta(gamma.size()),
        loops(*BatchNormLoops::plan(
            {{kBatch, channels, size, size},
             bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32,
             dnnl::memory::format_tag::nhwc},
            omp_get_max_threads(), simd)) {
    // Values of either type near 1, bf16 rounded as the loops round it.
    for (int64_t i = 0; i < elements; ++i) {
      const float v = 1.f + static_cast<float>(i % 97) / 97.f,
                  g = static_cast<float>(i % 89) / 89.f;
      if (bf16) {
        Lanes<uint16_t, 1>::put(reinterpret_cast<uint16_t*>(x.data()) + i, v);
        Lanes<uint16_t, 1>::put(reinterpret_cast<uint16_t*>(dy.data()) + i, g);
        Lanes<uint16_t, 1>::put(reinterpret_cast<uint16_t*>(other.data()) + i, -g);
      } else {
        reinterpret_cast<float*>(x.data())[i] = v;
        reinterpret_cast<float*>(dy.data())[i] = g;
        reinterpret_cast<float*>(other.data())[i] = -g;
      }
    }
    state.SetLabel(std::string(bf16 ? "bf16 " : "f32 ") + simd_name(simd));
  }
  void forward(bool write_y) {
    loops.forward_training(x.data(), write_y ? y.data() : nullptr, gamma.data(), beta.data(), 1e-5f,
                           write_y, mean.data(), var.data());
  }
  void count(benchmark::State& state, int passes) const {
    state.SetBytesProcessed(state.iterations() * passes * bytes);
  }

  int64_t channels, size;
  bool bf16;
  int64_t elements, bytes;
  AlignedArray<char> x, y, dy, other;
  std::vector<float> gamma, beta, mean, var, dgamma, dbeta;
  BatchNormLoops loops;
};

// Training forward with the fused ReLU: statistics (x read), then y
// written from x.
void BM_BatchNormForward(benchmark::State& state) {
  Tensors t(state);
  for (auto _ : state) t.forward(true);
  t.count(state, 3);
}

// The gradient sums (x and dy read), then dx written over dy from both.
void BM_BatchNormBackward(benchmark::State& state) {
  Tensors t(state);
  t.forward(true);
  for (auto _ : state) {
    t.loops.backward(t.x.data(), t.dy.data(), t.dy.data(), t.gamma.data(), t.beta.data(),
                     t.mean.data(), t.var.data(), 1e-5f, true, t.dgamma.data(), t.dbeta.data());
  }
  t.count(state, 5);
}

// The Add a BatchNorm's normalization is folded into: its statistics, then
// relu(a * x + b + shortcut) written over y.
void BM_BatchNormFoldedAdd(benchmark::State& state) {
  Tensors t(state);
  for (auto _ : state) {
    t.forward(false);
    t.loops.add_normalized(t.x.data(), t.dy.data(), t.y.data(), true);
  }
  t.count(state, 4);
}

// The Add's gradient through its ReLU (dy + the shortcut's gradient, cut
// where the Add's output y is not positive, in place) and the gradient sums
// of the BatchNorm folded into it (x read), in one pass: 4 tensors read, 1
// written (the Add makes it for rows shorter than 2 KB only).
void BM_AddGradientSums(benchmark::State& state) {
  Tensors t(state);
  t.forward(true);
  for (auto _ : state) {
    t.loops.take_gradient_sums(t.dy.data(), t.other.data(), t.y.data(), t.x.data(), t.mean.data());
  }
  t.count(state, 5);
}

// The same in two passes: the ReLU gradient's (3 read, 1 written), then the
// sums' (2 read).
void BM_AddGradientSumsApart(benchmark::State& state) {
  Tensors t(state);
  t.forward(true);
  const std::vector<const void*> others{t.other.data()};
  for (auto _ : state) {
    relu_gradient_sum(t.bf16, t.dy.data(), others, t.y.data(), t.elements, omp_get_max_threads(),
                      simd);
    t.loops.backward(t.x.data(), t.dy.data(), nullptr, t.gamma.data(), t.beta.data(), t.mean.data(),
                     t.var.data(), 1e-5f, false, t.dgamma.data(), t.dbeta.data());
  }
  t.count(state, 6);
}

// ResNet-50's BatchNorm shapes (channels, height = width), each in f32 and
// bf16.
void shapes(benchmark::internal::Benchmark* b) {
  for (auto [c, s] : std::vector<std::pair<int64_t, int64_t>>{{64, 112},
                                                              {64, 56},
                                                              {256, 56},
                                                              {128, 28},
                                                              {512, 28},
                                                              {256, 14},
                                                              {1024, 14},
                                                              {512, 7},
                                                              {2048, 7}}) {
    for (int64_t bf16 : {0, 1}) b->Args({c, s, bf16});
  }
  b->ArgNames({"channels", "size", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_BatchNormForward)->Apply(shapes);
BENCHMARK(BM_BatchNormBackward)->Apply(shapes);
BENCHMARK(BM_BatchNormFoldedAdd)->Apply(shapes);
BENCHMARK(BM_AddGradientSums)->Apply(shapes);
BENCHMARK(BM_AddGradientSumsApart)->Apply(shapes);

}  // namespace
}  // namespace dptrain

int main(int argc, char** argv) {
  using namespace dptrain;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--simd=", 7) != 0) {
      argv[kept++] = argv[i];
      continue;
    }
    bool found = false;
    for (Simd s : runnable_simds()) {
      if (argv[i] + 7 == std::string(simd_name(s))) simd = s, found = true;
    }
    if (!found) {
      std::string names;
      for (Simd s : runnable_simds()) names += std::string(" ") + simd_name(s);
      std::fprintf(stderr, "bench_loops: %s: this CPU runs only%s\n", argv[i], names.c_str());
      return 2;
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
