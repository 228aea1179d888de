// Every layer's forward and backward on its own, at the shapes of the
// shipped configs (or the configs given): time per call, and for
// convolution, transposed convolution and inner product the GFLOP/s they
// reach (2 x multiply-adds, as dptrain-bench counts them).
//
//   OMP_NUM_THREADS=2 build/benchmarks/bench_layers [CONFIG...] [--bf16]
//       [--batch N] [--benchmark_filter=REGEX ...]
//
// Without configs it runs every shipped Fashion-MNIST net (the ImageNet
// ones take minutes; name them to run them). Batch size is the config's
// data.batch_size unless --batch says otherwise, one process; with --bf16
// each config runs in FP32 and in BF16. Each layer runs on the values one
// whole step left in its blobs (a step runs before each benchmark).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "benchmarks/bench_specs.h"
#include "core/batch_loader.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/net.h"

namespace dptrain {
namespace {

struct NetUnderTest {
  std::string name;
  std::unique_ptr<Net> net;
  std::vector<float> images;
  std::vector<int32_t> labels;
};

std::unique_ptr<NetUnderTest> build(const std::string& name, const TrainSpec& spec, int batch) {
  DataSpec data_spec = spec.data();
  data_spec.set_batch_size(batch);
  data_spec.set_train_limit(batch);
  data_spec.set_test_limit(1);
  const DatasetSplits data = load_dataset(data_spec, spec.seed());
  auto t = std::make_unique<NetUnderTest>();
  t->name = name;
  t->net = std::make_unique<Net>(
      spec.net(),
      dnnl::memory::dims{batch, data.train.channels, data.train.height, data.train.width},
      spec.seed(), nullptr, Net::BlobMemory::kReuse, 1, spec.precision());
  BatchLoader loader(data.train, Normalization::from_spec(data_spec, data.train.channels),
                     Augmentation(), batch, 1, spec.seed());
  std::vector<int64_t> indices(static_cast<size_t>(batch));
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
  loader.start(0, indices, false);
  const Batch* b = loader.next();
  t->images.assign(b->images, b->images + batch * data.train.sample_size());
  t->labels.assign(b->labels, b->labels + batch);
  t->net->set_input(t->images.data(), t->labels.data(), batch);
  return t;
}

// Whether the layer's top gradient is also a bottom's (BatchNorm's, an
// Add's, a Split's first branch's): its backward may overwrite the
// gradient it reads (BatchNorm's and a fused activation's do), so each
// timed call starts from a fresh copy.
bool backward_in_place(const Net& net, const Layer& layer) {
  const Blob& top = net.blob(layer.top_name());
  if (!top.diff) return false;
  for (const std::string& name : layer.bottom_names()) {
    const Blob& bottom = net.blob(name);
    if (bottom.diff && bottom.diff.get_data_handle() == top.diff.get_data_handle()) return true;
  }
  return false;
}

void register_layers(NetUnderTest& t) {
  Net* net = t.net.get();
  const auto& layers = net->layers();
  const int64_t batch = net->input_dims()[0];
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer* layer = layers[i].get();
    const Layer::Work work = layer->work();
    const std::string prefix =
        "layer/" + t.name + "/" + std::to_string(i) + "_" + layer->name() + "_" + layer->type();
    const bool in_place = backward_in_place(*net, *layer);
    const dnnl::memory top_diff = net->blob(layer->top_name()).diff;
    auto add = [&](const std::string& pass, int64_t multiply_adds, bool restore, auto run) {
      auto* b =
          benchmark::RegisterBenchmark((prefix + "/" + pass).c_str(), [=](benchmark::State& state) {
            // Every blob as one whole step leaves it, so that no layer runs
            // on what earlier benchmarks made of its inputs.
            net->forward(true);
            net->backward();
            std::vector<char> saved;
            char* diff = restore ? static_cast<char*>(top_diff.get_data_handle()) : nullptr;
            if (restore) saved.assign(diff, diff + top_diff.get_desc().get_size());
            for (auto _ : state) {
              if (restore) {
                state.PauseTiming();
                std::copy(saved.begin(), saved.end(), diff);
                state.ResumeTiming();
              }
              run();
            }
            state.counters["batch"] = static_cast<double>(batch);
            state.counters["threads"] = omp_get_max_threads();
            if (multiply_adds > 0) {
              state.counters["GFLOP"] =
                  benchmark::Counter(2e-9 * static_cast<double>(multiply_adds) *
                                         static_cast<double>(state.iterations()),
                                     benchmark::Counter::kIsRate);
            }
          });
      b->UseRealTime()->Unit(benchmark::kMicrosecond);
    };
    add("forward", work.forward, false, [layer] { layer->forward(true); });
    if (net->runs_backward(i)) {
      add("backward", work.backward, in_place, [layer] { layer->backward(); });
    }
  }
}

}  // namespace
}  // namespace dptrain

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::vector<std::string> configs;
  bool both = false;
  int batch = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--bf16") {
      both = true;
    } else if (arg == "--batch" && i + 1 < argc) {
      batch = std::atoi(argv[++i]);
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "bench_layers: unknown flag %s\n", arg.c_str());
      return 2;
    } else {
      configs.push_back(arg);
    }
  }
  if (configs.empty()) {
    for (const auto& entry : std::filesystem::directory_iterator(DPTRAIN_SOURCE_DIR "/configs")) {
      const std::string path = entry.path().string();
      if (path.ends_with("_fmnist.textproto") && path.find("sweep_") == std::string::npos) {
        configs.push_back(path);
      }
    }
    std::sort(configs.begin(), configs.end());
  }
  std::vector<std::unique_ptr<dptrain::NetUnderTest>> nets;
  try {
    for (const std::string& path : configs) {
      for (const auto& [name, spec] : dptrain::bench_specs(path, both)) {
        nets.push_back(dptrain::build(name, spec, batch > 0 ? batch : spec.data().batch_size()));
        dptrain::register_layers(*nets.back());
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_layers: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
