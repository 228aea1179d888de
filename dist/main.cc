// dptrain: the worker binary. Run it under mpirun (or srun) for several
// ranks, or on its own for one.
//
//   dptrain train CONFIG [--set PATH=VALUE]... [--run-dir DIR]
//   dptrain eval CONFIG --weights FILE [--set PATH=VALUE]...
//   dptrain diff-weights A B [--tolerance T]
//
// Exit codes: 0 success, 2 a user error (bad flag, config, file), 3 a
// difference above --tolerance, 1 anything else.
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"
#include "dist/communicator.h"
#include "dist/trainer.h"

namespace dptrain {
namespace {

constexpr const char* kUsage =
    "usage: dptrain train CONFIG [--set PATH=VALUE]... [--run-dir DIR]\n"
    "       dptrain eval CONFIG --weights FILE [--set PATH=VALUE]...\n"
    "       dptrain diff-weights A B [--tolerance T]\n";

struct Args {
  std::string command, config, run_dir, weights;
  std::vector<std::string> sets, positional;
  double tolerance = -1;
};

Args parse_args(int argc, char** argv) {
  if (argc < 2) throw UserError(std::string("missing command\n") + kUsage);
  Args a;
  a.command = argv[1];
  if (a.command == "-h" || a.command == "--help") {
    std::fputs(kUsage, stdout);
    std::exit(0);
  }
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(arg + " needs a value\n" + kUsage);
      return argv[++i];
    };
    if (arg == "--set") {
      a.sets.push_back(value());
    } else if (arg.rfind("--set=", 0) == 0) {
      a.sets.push_back(arg.substr(6));
    } else if (arg == "--run-dir") {
      a.run_dir = value();
    } else if (arg == "--weights") {
      a.weights = value();
    } else if (arg == "--tolerance") {
      const std::string v = value();
      char* end = nullptr;
      a.tolerance = std::strtod(v.c_str(), &end);
      if (*end != '\0' || !(a.tolerance >= 0)) throw UserError("--tolerance needs a number >= 0, got '" + v + "'");
    } else if (arg.rfind("--", 0) == 0) {
      throw UserError("unknown flag " + arg + "\n" + kUsage);
    } else {
      a.positional.push_back(arg);
    }
  }
  const bool known = a.command == "train" || a.command == "eval" || a.command == "diff-weights";
  if (!known) throw UserError("unknown command '" + a.command + "'\n" + kUsage);
  const size_t want = a.command == "diff-weights" ? 2 : 1;
  if (a.positional.size() != want) {
    throw UserError(a.command + " takes " + std::to_string(want) + " file argument(s)\n" + kUsage);
  }
  if (a.command != "diff-weights") a.config = a.positional[0];
  if (a.command == "eval" && a.weights.empty()) throw UserError("eval needs --weights FILE");
  return a;
}

TrainSpec load_spec(const Args& a) {
  TrainSpec spec = load_train_spec(a.config);
  for (const std::string& s : a.sets) apply_override(&spec, s);
  validate_train_spec(spec);
  return spec;
}

std::string default_run_dir(const TrainSpec& spec, const std::string& config) {
  std::string name = spec.name().empty() ? std::filesystem::path(config).stem().string() : spec.name();
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + name + "-" + stamp;
}

void prepare_run_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError("cannot create run folder " + dir + ": " + ec.message());
  for (const char* f : {"metrics.jsonl", "final_weights"}) {
    if (std::filesystem::exists(std::filesystem::path(dir) / f)) {
      throw UserError("run folder " + dir + " already holds a run (" + f +
                      "); choose another --run-dir");
    }
  }
}

int diff_weights(const Args& a) {
  const WeightsFile x = load_weights(a.positional[0]), y = load_weights(a.positional[1]);
  if (x.tensor_size() != y.tensor_size()) {
    throw UserError(a.positional[0] + " holds " + std::to_string(x.tensor_size()) + " tensors, " +
                    a.positional[1] + " holds " + std::to_string(y.tensor_size()));
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

}  // namespace
}  // namespace dptrain

int main(int argc, char** argv) {
  using namespace dptrain;
  Args args;
  try {
    args = parse_args(argc, argv);
    if (args.command == "diff-weights") return diff_weights(args);
  } catch (const UserError& e) {
    std::fprintf(stderr, "dptrain: %s\n", e.what());
    return 2;
  }

  Communicator comm(&argc, &argv);
  auto fail = [&](const std::string& what, int code) {
    const std::string where = comm.size() > 1 ? "rank " + std::to_string(comm.rank()) + ": " : "";
    comm.abort("dptrain: " + where + what, code);
  };
  try {
    const TrainSpec spec = load_spec(args);
    comm.set_stall_timeout(spec.runtime().stall_timeout_s());
    if (args.command == "train") {
      std::string dir = args.run_dir.empty() ? default_run_dir(spec, args.config) : args.run_dir;
      if (comm.rank() == 0) prepare_run_dir(dir);
      Trainer trainer(spec, comm, dir);
      trainer.run();
    } else {
      Trainer trainer(spec, comm, "");
      trainer.load_weights(args.weights);
      double loss = 0;
      const ConfusionMatrix cm = trainer.evaluate(&loss);
      if (comm.rank() == 0) std::printf("test_loss %.4f\n%s", loss, cm.report().c_str());
    }
  } catch (const UserError& e) {
    fail(e.what(), 2);
  } catch (const MpiError& e) {
    fail(e.what(), 1);
  } catch (const std::exception& e) {
    fail(std::string("internal error: ") + e.what(), 1);
  }
  return 0;
}
