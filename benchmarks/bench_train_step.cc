// Training throughput of a config's net: images/s over forward, backward
// and the optimizer step (what metrics.jsonl calls images_per_sec), on
// batches of real data decoded beforehand.
//
//   OMP_NUM_THREADS=2 build/benchmarks/bench_train_step configs/lenet5_fmnist.textproto
//       [more configs] [--bf16] [--benchmark_repetitions=3 ...]
//
// Batch size is the config's (data.batch_size, one process); the
// precision is the config's, and with --bf16 each config runs in FP32 and
// in BF16 one after the other.
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "benchmarks/bench_specs.h"
#include "core/batch_loader.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/lr_schedule.h"
#include "core/net.h"
#include "core/optimizer.h"

namespace dptrain {
namespace {

void train_step(benchmark::State& state, const TrainSpec& spec) {
  DataSpec data_spec = spec.data();
  data_spec.set_train_limit(4096);
  data_spec.set_test_limit(1);
  const DatasetSplits data = load_dataset(data_spec, spec.seed());
  const int batch = data_spec.batch_size();
  Net net(spec.net(), {batch, data.train.channels, data.train.height, data.train.width},
          spec.seed(), nullptr, Net::BlobMemory::kReuse, 1, spec.precision());
  auto optimizer = Optimizer::create(spec.solver(), net.params().size());

  // Decode every batch up front so the loop measures compute only.
  BatchLoader loader(data.train, Normalization::from_spec(data_spec, data.train.channels),
                     Augmentation(), batch, 1, spec.seed());
  std::vector<int64_t> indices(static_cast<size_t>(data.train.size()));
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
  loader.start(0, indices, false);
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int32_t>> labels;
  while (const Batch* b = loader.next()) {
    if (b->count != batch) break;
    images.emplace_back(b->images, b->images + batch * data.train.sample_size());
    labels.emplace_back(b->labels, b->labels + batch);
  }

  size_t i = 0;
  for (auto _ : state) {
    net.set_input(images[i].data(), labels[i].data(), batch);
    net.forward(true);
    net.backward();
    optimizer->step(net.params().values(), net.params().grads(), spec.solver().base_lr());
    i = (i + 1) % images.size();
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["threads"] = omp_get_max_threads();
  state.counters["batch"] = batch;
}

}  // namespace
}  // namespace dptrain

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_train_step CONFIG... [--benchmark_* flags]\n");
    return 2;
  }
  std::vector<std::string> configs;
  bool both = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--bf16") {
      both = true;
    } else {
      configs.push_back(argv[i]);
    }
  }
  for (const std::string& path : configs) {
    for (const auto& [name, spec] : dptrain::bench_specs(path, both)) {
      benchmark::RegisterBenchmark(
          ("train_step/" + name).c_str(),
          [spec = spec](benchmark::State& s) { dptrain::train_step(s, spec); })
          ->MinTime(3.0)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
