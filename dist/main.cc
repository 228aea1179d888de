// dptrain: the worker binary. Run it under mpirun (or srun) for several
// ranks, or on its own for one.
//
//   dptrain train CONFIG [--set PATH=VALUE]... [--run-dir DIR] [--resume]
//                 [--stop-at-step N] [--init-weights FILE [--reinit LAYER]...]
//   dptrain eval CONFIG --weights FILE [--set PATH=VALUE]...
//   dptrain embed CONFIG --weights FILE --out FILE.npy [--train-set] [--set ...]
//   dptrain reconstruct CONFIG --weights FILE --out DIR [--count N] [--set ...]
//   dptrain diff-weights A B [--tolerance T]
//
// Exit codes: 0 success, 2 a user error (bad flag, config, file), 3 a
// difference above --tolerance, 75 stopped on request with a checkpoint
// written (preempted: resume with --resume), 1 anything else.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/data_check.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/image.h"
#include "core/log.h"
#include "core/npy.h"
#include "core/onnx_export.h"
#include "dist/checkpointer.h"
#include "dist/communicator.h"
#include "dist/control_client.h"
#include "dist/event_log.h"
#include "dist/fault_injector.h"
#include "dist/metrics_log.h"
#include "dist/progress_display.h"
#include "dist/stop_signals.h"
#include "dist/tensorboard_writer.h"
#include "dist/timeline_writer.h"
#include "dist/trainer.h"

namespace dptrain {
namespace {

namespace fs = std::filesystem;

constexpr int kStopped = 75;

// "FIRST:LAST", two steps with 0 <= FIRST <= LAST; nullopt otherwise.
std::optional<std::pair<int64_t, int64_t>> step_window(const std::string& v) {
  const size_t colon = v.find(':');
  if (colon == std::string::npos) return std::nullopt;
  int64_t first = -1, last = -1;
  const char* end = v.data() + v.size();
  auto a = std::from_chars(v.data(), v.data() + colon, first);
  auto b = std::from_chars(v.data() + colon + 1, end, last);
  if (a.ec != std::errc() || a.ptr != v.data() + colon || b.ec != std::errc() || b.ptr != end ||
      first < 0 || first > last)
    return std::nullopt;
  return std::make_pair(first, last);
}

struct Args {
  std::string command, config, run_dir, weights, init_weights, out;
  bool train_set = false;
  int64_t count = 32;
  std::vector<std::string> sets, reinit, files;
  std::vector<int> rung_epochs;
  std::string timeline, timeline_steps = "0:99", log_level = "info";
  bool log_all_ranks = false;
  int64_t timeline_every = 1;
  bool resume = false;
  int64_t stop_at_step = -1;
  double tolerance = -1;
  int threads = 0;
};

// Parses the command line; returns an exit code when the program should
// end here (help printed, or a usage error reported).
std::optional<int> parse_args(int argc, char** argv, Args& a) {
  CLI::App app{"dptrain: data-parallel CNN training on oneDNN and MPI", "dptrain"};
  app.require_subcommand(1);
  if (argc > 1 && argv[1][0] != '-' && std::strcmp(argv[1], "train") != 0 &&
      std::strcmp(argv[1], "eval") != 0 && std::strcmp(argv[1], "embed") != 0 &&
      std::strcmp(argv[1], "reconstruct") != 0 && std::strcmp(argv[1], "predict") != 0 &&
      std::strcmp(argv[1], "export") != 0 && std::strcmp(argv[1], "data-check") != 0 &&
      std::strcmp(argv[1], "diff-weights") != 0) {
    std::fprintf(stderr,
                 "dptrain: unknown command '%s' (train, eval, predict, embed, reconstruct, export, "
                 "data-check or diff-weights; see dptrain --help)\n",
                 argv[1]);
    return 2;
  }
  CLI::App* train = app.add_subcommand("train", "train a config, writing a run folder");
  train->add_option("CONFIG", a.config, "training config (Protobuf text format)")->required();
  train->add_option("--set", a.sets, "override a config field: PATH=VALUE (repeatable)");
  train->add_option("--run-dir", a.run_dir, "run folder (default runs/NAME-DATE-TIME)");
  train->add_flag("--resume", a.resume,
                  "continue from the newest good checkpoint in --run-dir (start fresh if none)");
  train
      ->add_option("--stop-at-step", a.stop_at_step,
                   "checkpoint at step N and exit 75, as if preempted there")
      ->check([](const std::string& v) {
        return v.find_first_not_of("0123456789") == std::string::npos && std::stoll(v) > 0
                   ? std::string()
                   : "must be a step >= 1, got '" + v + "'";
      });
  train->add_option("--init-weights", a.init_weights,
                    "start from these parameters (final_weights or a checkpoint), by tensor name");
  train->add_option("--reinit", a.reinit,
                    "with --init-weights: keep this layer's fresh initial values");
  train
      ->add_option("--rung-epochs", a.rung_epochs,
                   "under dptrain-launch: after these epochs evaluate, checkpoint and wait for "
                   "the launcher's decision (a sweep's early stopping)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  train->add_option("--timeline", a.timeline,
                    "write a Chrome trace of where each step's time goes, one track per rank "
                    "(open in Perfetto or chrome://tracing)");
  train
      ->add_option("--timeline-steps", a.timeline_steps,
                   "with --timeline: the steps recorded, FIRST:LAST (default 0:99)")
      ->check([](const std::string& v) {
        return step_window(v) ? std::string()
                              : "needs FIRST:LAST with 0 <= FIRST <= LAST, got '" + v + "'";
      });
  train
      ->add_option("--timeline-every", a.timeline_every,
                   "with --timeline: record every Nth step of the window (default 1)")
      ->check(CLI::PositiveNumber);
  CLI::App* eval = app.add_subcommand("eval", "evaluate weights on the test set");
  CLI::App* embed = app.add_subcommand(
      "embed", "write an embedding net's embeddings of the test set as a NumPy array");
  CLI::App* reconstruct = app.add_subcommand(
      "reconstruct", "draw test images beside an autoencoder's reconstructions, as a PNG");
  CLI::App* predict =
      app.add_subcommand("predict",
                         "write the net's outputs on the test set as a NumPy array (probabilities, "
                         "embeddings or reconstructions)");
  CLI::App* exporter = app.add_subcommand(
      "export", "write the net's inference graph with its weights as an ONNX model");
  for (CLI::App* sub : {train, eval, embed, reconstruct, predict, exporter}) {
    sub->add_option("--log-level", a.log_level,
                    "events logged on stderr, with time and rank: error, warn, info (default) or "
                    "debug")
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
    sub->add_flag("--log-all-ranks", a.log_all_ranks, "every rank logs, not only rank 0");
  }
  for (CLI::App* sub : {eval, predict, exporter, embed, reconstruct}) {
    sub->add_option("CONFIG", a.config, "config the weights were trained with")->required();
    sub->add_option("--weights", a.weights, "final_weights or a checkpoint")->required();
    sub->add_option("--set", a.sets, "override a config field: PATH=VALUE (repeatable)");
  }
  predict
      ->add_option("--out", a.out,
                   "FILE.npy: float32, samples x outputs (reconstructions: samples x C x H x W, "
                   "in pixels); the labels go to FILE.labels.npy")
      ->required();
  predict->add_flag("--train-set", a.train_set, "the training set's outputs, not the test set's");
  exporter
      ->add_option("--onnx", a.out,
                   "OUT.onnx: input 'pixels' N x C x H x W in [0, 1], normalisation inside; "
                   "output the net's prediction")
      ->required();
  exporter
      ->add_option("--batch", a.count,
                   "a fixed batch size for the graph (default: any, a symbolic dimension)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  embed
      ->add_option("--out", a.out,
                   "FILE.npy: float32, samples x dimensions; the labels go to FILE.labels.npy")
      ->required();
  embed->add_flag("--train-set", a.train_set, "the training set's embeddings, not the test set's");
  reconstruct->add_option("--out", a.out, "folder for reconstructions.png")->required();
  reconstruct->add_option("--count", a.count, "test images drawn (default 32)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  CLI::App* check = app.add_subcommand(
      "data-check", "report a config's data (samples per class, image sizes, unreadable files)");
  check->add_option("CONFIG", a.config, "training config")->required();
  check->add_option("--set", a.sets, "override a config field: PATH=VALUE (repeatable)");
  check->add_option("--threads", a.threads, "threads decoding images (default: all cores)")
      ->check(CLI::Range(1, 256));
  CLI::App* diff = app.add_subcommand("diff-weights", "compare two weight files tensor by tensor");
  diff->add_option("FILES", a.files, "two final_weights files or checkpoints, A and B")
      ->required()
      ->expected(2);
  diff->add_option("--tolerance", a.tolerance, "exit 3 when max_rel_diff exceeds T")
      ->check([](const std::string& v) {
        char* end = nullptr;
        const double t = std::strtod(v.c_str(), &end);
        return *end == '\0' && t >= 0 ? std::string() : "needs a number >= 0, got '" + v + "'";
      });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
      what = "unknown flag " + what.substr(what.find(": ") + 2);
    }
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "dptrain: %s (see dptrain --help)\n", what.c_str());
    return 2;
  }
  a.command = app.get_subcommands().front()->get_name();
  if (a.command == "export" && !exporter->count("--batch")) a.count = 0;
  if (!a.reinit.empty() && a.init_weights.empty()) {
    std::fprintf(stderr, "dptrain: --reinit needs --init-weights\n");
    return 2;
  }
  if (a.timeline.empty() &&
      (train->count("--timeline-steps") || train->count("--timeline-every"))) {
    std::fprintf(stderr, "dptrain: --timeline-steps and --timeline-every need --timeline\n");
    return 2;
  }
  if (a.resume && a.run_dir.empty()) {
    std::fprintf(stderr, "dptrain: --resume needs --run-dir\n");
    return 2;
  }
  return std::nullopt;
}

TrainSpec load_spec(const Args& a) {
  TrainSpec spec = load_train_spec(a.config);
  for (const std::string& s : a.sets) apply_override(&spec, s);
  validate_train_spec(spec);
  return spec;
}

void prepare_run_dir(const std::string& dir, bool resume) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create run folder " + dir + ": " + ec.message());
  if (resume) {
    // Temporaries of a write that was cut short are never checkpoints.
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".tmp") fs::remove(entry.path(), ec);
    }
    return;
  }
  for (const char* f : {"metrics.jsonl", "final_weights"}) {
    if (fs::exists(fs::path(dir) / f)) {
      throw UserError("run folder " + dir + " already holds a run (" + f +
                      "); choose another --run-dir, or --resume it");
    }
  }
}

// Rank 0 picks the newest good checkpoint and sends its bytes to every
// rank, so ranks on hosts without the run folder resume from it too.
std::optional<std::pair<Checkpoint, std::string>> find_resume_point(const std::string& dir,
                                                                    const Communicator& comm) {
  std::string bytes, name;
  if (comm.rank() == 0) {
    auto found = find_newest_good_checkpoint(dir, [](const std::string& why) {
      log_warn("skipping " + why + "; trying the previous checkpoint");
    });
    if (found) {
      bytes = std::move(found->bytes);
      name = fs::path(found->path).filename().string();
    } else if (!list_checkpoints(dir).empty()) {
      throw UserError("no good checkpoint in " + dir + " (every one is damaged, see above)");
    }
  }
  uint64_t sizes[2] = {bytes.size(), name.size()};
  comm.broadcast(sizes, sizeof sizes);
  if (sizes[0] == 0) return std::nullopt;
  bytes.resize(sizes[0]);
  name.resize(sizes[1]);
  comm.broadcast(bytes.data(), bytes.size());
  comm.broadcast(name.data(), name.size());
  return std::make_pair(decode_checkpoint(bytes, name), name);
}

// FILE.npy -> FILE.labels.npy (FILE.labels.npy for any other name too).
std::string labels_path(const std::string& out) {
  const std::string stem = out.size() > 4 && out.compare(out.size() - 4, 4, ".npy") == 0
                               ? out.substr(0, out.size() - 4)
                               : out;
  return stem + ".labels.npy";
}

// embed (embeddings only) and predict (any net): the outputs of every
// sample of the split, gathered in order, and their labels.
void predict(const Args& a, const TrainSpec& spec, const Communicator& comm) {
  Trainer trainer(spec, comm, "");
  const LossLayer& loss = trainer.net().loss_layer();
  if (a.command == "embed" && loss.kind() != LossLayer::Kind::kEmbedding) {
    throw UserError(a.config + ": the net's loss is " + loss.type() +
                    ", not an embedding's (TripletLoss); dptrain predict writes its outputs");
  }
  trainer.load_weights(a.weights);
  std::string array, what;
  std::vector<int32_t> labels;
  if (loss.kind() == LossLayer::Kind::kReconstruction) {
    if (a.train_set) throw UserError("predict --train-set: reconstructions are of the test set");
    Trainer::Reconstructions r = trainer.reconstruct(std::numeric_limits<int64_t>::max());
    array = npy_bytes(r.outputs, {r.count, r.channels, r.height, r.width});
    what = "reconstructions";
    labels = std::move(r.labels);
  } else {
    EvalShard e = trainer.outputs(a.train_set);
    array = npy_bytes(e.scores, {static_cast<int64_t>(e.labels.size()), e.width});
    what = std::to_string(e.width) + " numbers";
    if (loss.kind() == LossLayer::Kind::kEmbedding) what = "embeddings of " + what;
    labels = std::move(e.labels);
  }
  const auto n = static_cast<int64_t>(labels.size());
  if (comm.rank() != 0) return;
  write_file_atomically(a.out, array);
  write_file_atomically(labels_path(a.out), npy_bytes(labels, {n}));
  std::printf("dptrain: %lld samples' %s to %s, labels to %s\n", static_cast<long long>(n),
              what.c_str(), a.out.c_str(), labels_path(a.out).c_str());
}

void export_onnx(const Args& a, const TrainSpec& spec, const Communicator& comm) {
  Trainer trainer(spec, comm, "");
  trainer.load_weights(a.weights);
  const Net& net = trainer.net();
  const dnnl::memory::dims in = net.input_dims();
  const auto channels = static_cast<int>(in[1]);
  const dnnl::memory::dims out = net.blob(net.loss_layer().bottom_names().at(0)).dims();
  const std::string bytes = onnx_model_bytes(
      spec.net(), net.params().export_weights(), Normalization::from_spec(spec.data(), channels),
      channels, static_cast<int>(in[2]), static_cast<int>(in[3]), {out.begin() + 1, out.end()},
      a.count);
  if (comm.rank() != 0) return;
  write_file_atomically(a.out, bytes);
  std::printf("dptrain: ONNX model (opset 13) of %s to %s\n", a.config.c_str(), a.out.c_str());
}

// Pairs of tiles (image | reconstruction), 8 pairs a row, on white.
std::vector<uint8_t> reconstruction_grid(const Trainer::Reconstructions& r, int* width,
                                         int* height) {
  constexpr int64_t kPairsPerRow = 8, kGap = 2;
  const int64_t h = r.height, w = r.width, c = r.channels;
  const int64_t cols = std::min(kPairsPerRow, r.count), rows = (r.count + cols - 1) / cols;
  *width = static_cast<int>(cols * 2 * w + (cols + 1) * kGap);
  *height = static_cast<int>(rows * h + (rows + 1) * kGap);
  std::vector<uint8_t> img(static_cast<size_t>(*width * *height * c), 255);
  auto put = [&](const std::vector<float>& src, int64_t i, int64_t x0, int64_t y0) {
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const float v = src[static_cast<size_t>(((i * c + ch) * h + y) * w + x)];
          const float clamped = std::min(1.f, std::max(0.f, v));
          img[static_cast<size_t>(((y0 + y) * *width + x0 + x) * c + ch)] =
              static_cast<uint8_t>(std::lround(clamped * 255.f));
        }
  };
  for (int64_t i = 0; i < r.count; ++i) {
    const int64_t x0 = kGap + (i % cols) * (2 * w + kGap), y0 = kGap + (i / cols) * (h + kGap);
    put(r.inputs, i, x0, y0);
    put(r.outputs, i, x0 + w, y0);
  }
  return img;
}

void reconstruct(const Args& a, const TrainSpec& spec, const Communicator& comm) {
  Trainer trainer(spec, comm, "");
  if (trainer.net().loss_layer().kind() != LossLayer::Kind::kReconstruction) {
    throw UserError(a.config + ": the net's loss is " + trainer.net().loss_layer().type() +
                    ", not a reconstruction's (MSELoss or L1Loss); dptrain eval evaluates it");
  }
  trainer.load_weights(a.weights);
  if (comm.rank() != 0) return;
  const Trainer::Reconstructions r = trainer.reconstruct(a.count);
  if (r.channels != 1 && r.channels != 3) {
    throw UserError("reconstruct draws images of 1 or 3 channels, not " +
                    std::to_string(r.channels));
  }
  int width = 0, height = 0;
  const std::vector<uint8_t> grid = reconstruction_grid(r, &width, &height);
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) throw UserError("cannot create " + a.out + ": " + ec.message());
  const std::string path = (fs::path(a.out) / "reconstructions.png").string();
  write_file_atomically(path, png_bytes(grid, width, height, r.channels));
  std::printf("dptrain: %lld test images beside their reconstructions in %s (%dx%d)\n",
              static_cast<long long>(r.count), path.c_str(), width, height);
}

int train(const Args& a, const TrainSpec& spec, Communicator& comm) {
  const bool leader = comm.rank() == 0;
  const std::string dir = a.run_dir.empty() ? default_run_dir(spec.name(), a.config) : a.run_dir;
  if (a.resume) {
    uint64_t finished = leader && fs::exists(fs::path(dir) / "final_weights");
    comm.broadcast(&finished, sizeof finished);
    if (finished) {
      if (leader)
        std::printf("dptrain: %s holds a finished run (final_weights); nothing to resume\n",
                    dir.c_str());
      return 0;
    }
  }
  if (leader) prepare_run_dir(dir, a.resume);
  Trainer trainer(spec, comm, dir);
  if (a.resume) {
    if (auto point = find_resume_point(dir, comm)) trainer.resume(point->first, point->second);
  } else if (!a.init_weights.empty()) {
    trainer.init_weights(load_weights_or_checkpoint(a.init_weights), a.init_weights, a.reinit);
  }

  // The hooks, in the order they are called.
  FaultInjector faults(comm.rank());
  StopSignals signals;
  std::unique_ptr<ControlClient> control = leader ? ControlClient::from_env() : nullptr;
  std::unique_ptr<MetricsLog> log =
      leader ? std::make_unique<MetricsLog>(dir + "/metrics.jsonl") : nullptr;
  std::unique_ptr<ProgressDisplay> progress =
      leader ? std::make_unique<ProgressDisplay>() : nullptr;
  std::unique_ptr<TensorBoardWriter> tensorboard =
      leader ? std::make_unique<TensorBoardWriter>(dir, to_text(spec)) : nullptr;
  if (!a.rung_epochs.empty() && leader && !control) {
    throw UserError("--rung-epochs needs dptrain-launch (no control channel in the environment)");
  }
  EventLog events;
  std::unique_ptr<TimelineWriter> timeline;
  if (!a.timeline.empty()) {
    const auto [first, last] = *step_window(a.timeline_steps);
    trainer.enable_timeline(first, last, a.timeline_every);
    timeline = std::make_unique<TimelineWriter>(comm, trainer.timeline(), a.timeline);
  }
  std::vector<RunHook*> durable;
  if (control) durable.push_back(control.get());
  Checkpointer checkpointer(spec.checkpoint(), dir, leader, durable,
                            [&faults](int64_t step) { faults.before_rename(step); });
  for (RunHook* hook : std::initializer_list<RunHook*>{&faults, &signals, &checkpointer, &events,
                                                       log.get(), tensorboard.get(), timeline.get(),
                                                       progress.get(), control.get()}) {
    if (hook) trainer.add_hook(hook);
  }
  return trainer.run(&checkpointer, a.stop_at_step, a.rung_epochs).stopped ? kStopped : 0;
}

int diff_weights(const Args& a) {
  const WeightsFile x = load_weights_or_checkpoint(a.files[0]),
                    y = load_weights_or_checkpoint(a.files[1]);
  if (x.tensor_size() != y.tensor_size()) {
    throw UserError(a.files[0] + " holds " + std::to_string(x.tensor_size()) + " tensors, " +
                    a.files[1] + " holds " + std::to_string(y.tensor_size()));
  }
  double worst = 0;
  std::printf("%-32s %12s %12s\n", "tensor", "max_abs_diff", "rel_diff");
  for (int i = 0; i < x.tensor_size(); ++i) {
    const NamedTensor &t = x.tensor(i), &u = y.tensor(i);
    if (t.name() != u.name() || t.data().size() != u.data().size()) {
      throw UserError("tensor " + std::to_string(i) + " differs in name or shape: '" + t.name() +
                      "' vs '" + u.name() + "'");
    }
    const size_t n = t.data().size() / sizeof(float);
    std::vector<float> p(n), q(n);
    std::memcpy(p.data(), t.data().data(), n * sizeof(float));
    std::memcpy(q.data(), u.data().data(), n * sizeof(float));
    // Relative to the tensor's scale: the largest difference over the
    // largest magnitude, so near-zero entries do not blow it up.
    double diff = 0, scale = 0;
    for (size_t k = 0; k < n; ++k) {
      diff = std::max(diff, std::fabs(static_cast<double>(p[k]) - q[k]));
      scale = std::max(scale, std::fabs(static_cast<double>(q[k])));
    }
    const double rel = diff == 0 ? 0 : diff / std::max(scale, 1e-30);
    worst = std::max(worst, rel);
    std::printf("%-32s %12.4g %12.4g\n", t.name().c_str(), diff, rel);
  }
  std::printf("max_rel_diff %.6g\n", worst);
  return a.tolerance >= 0 && worst > a.tolerance ? 3 : 0;
}

// Exit 1 when a run of this config would stop at what was found.
int data_check(const Args& a) {
  const TrainSpec spec = load_spec(a);
  const int threads = a.threads > 0
                          ? a.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const DataCheck check = check_data(spec.data(), spec.seed(), threads);
  std::printf("%s", check.report.c_str());
  return check.run_would_stop ? 1 : 0;
}

}  // namespace
}  // namespace dptrain

int main(int argc, char** argv) {
  using namespace dptrain;
  Args args;
  if (auto code = parse_args(argc, argv, args)) return *code;
  if (args.command == "diff-weights" || args.command == "data-check") {
    try {
      return args.command == "diff-weights" ? diff_weights(args) : data_check(args);
    } catch (const UserError& e) {
      std::fprintf(stderr, "dptrain: %s\n", e.what());
      return 2;
    }
  }

  int code = 0;
  Communicator comm(&argc, &argv);
  StopSignals::watch();
  configure_log(comm.rank(), *parse_log_level(args.log_level),
                args.log_all_ranks || comm.rank() == 0);
  auto fail = [&](const std::string& what, int status) {
    const std::string where = comm.size() > 1 ? "rank " + std::to_string(comm.rank()) + ": " : "";
    comm.abort("dptrain: " + where + what, status);
  };
  try {
    const TrainSpec spec = load_spec(args);
    comm.set_stall_timeout(spec.runtime().stall_timeout_s());
    if (args.command == "train") {
      code = train(args, spec, comm);
    } else if (args.command == "embed" || args.command == "predict") {
      predict(args, spec, comm);
    } else if (args.command == "export") {
      export_onnx(args, spec, comm);
    } else if (args.command == "reconstruct") {
      reconstruct(args, spec, comm);
    } else {
      Trainer trainer(spec, comm, "");
      trainer.load_weights(args.weights);
      const Evaluation e = trainer.evaluate();
      if (comm.rank() == 0) std::printf("%s", e.report(trainer.class_names()).c_str());
    }
  } catch (const UserError& e) {
    fail(e.what(), 2);
  } catch (const MpiError& e) {
    fail(e.what(), 1);
  } catch (const std::exception& e) {
    fail(std::string("internal error: ") + e.what(), 1);
  }
  return code;
}
