// dptrain-launch: runs dptrain under mpirun and keeps the run alive.
//
//   dptrain-launch run --np N [--hostfile H] [--max-restarts R] [--stall-timeout S]
//                      [--run-dir DIR] [--listen ADDR[:PORT]] [--mpirun-arg ARG]...
//                      CONFIG [--set PATH=VALUE]...
//   dptrain-launch run --resume DIR
//
// Exit codes: 0 the run finished; 1 it failed (restarts exhausted); 2 a
// user error (bad flag or config, the worker's own exit 2, mpirun missing),
// as one line "dptrain-launch: ..." on stderr; 75 stopped on request,
// unfinished (continue with `run --resume DIR`).
//
// DPTRAIN_LAUNCH_MPIRUN and DPTRAIN_LAUNCH_WORKER name the mpirun and the
// dptrain binary to use (defaults: mpirun on PATH; dptrain beside this
// binary, in the build tree, or on PATH).
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/process/search_path.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"
#include "launcher/launch_spec.h"
#include "launcher/report.h"
#include "launcher/run_folder.h"
#include "launcher/session_guard.h"
#include "launcher/supervisor.h"
#include "launcher/sweep_runner.h"
#include "launcher/sweep_spec.h"

namespace dptrain::launcher {
namespace {

bool executable(const std::filesystem::path& p) {
  return std::filesystem::is_regular_file(p) && ::access(p.c_str(), X_OK) == 0;
}

std::string find_program(const char* env_name, const std::string& name,
                         const std::vector<std::filesystem::path>& candidates,
                         const std::string& hint) {
  if (const char* env = std::getenv(env_name); env && *env) {
    const std::string path = env;
    if (path.find('/') == std::string::npos && !boost::process::search_path(path).empty())
      return path;
    if (executable(path)) return std::filesystem::absolute(path).string();
    throw UserError(std::string(env_name) + "=" + path + " is not an executable");
  }
  for (const auto& c : candidates) {
    if (executable(c)) return c.string();
  }
  if (!boost::process::search_path(name).empty()) return name;
  throw UserError(name + " not found " + hint);
}

std::string find_worker() {
  std::vector<std::filesystem::path> candidates;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(self.parent_path() / "dptrain");
#ifdef DPTRAIN_BUILD_WORKER
  candidates.emplace_back(DPTRAIN_BUILD_WORKER);
#endif
  return find_program("DPTRAIN_LAUNCH_WORKER", "dptrain", candidates,
                      "beside dptrain-launch or on PATH (set DPTRAIN_LAUNCH_WORKER=PATH)");
}

std::string find_mpirun() {
  return find_program("DPTRAIN_LAUNCH_MPIRUN", "mpirun", {},
                      "on PATH (Debian: apt-get install openmpi-bin)");
}

std::string absolute(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

// Two launchers on one folder would start two jobs writing the same
// checkpoints. The lock (on the folder itself, so no file is left behind)
// lasts as long as this process and its session guard, which holds it
// until the jobs of a launcher killed outright are gone; a guard about to
// exit is waited for, briefly.
int lock_run_folder(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError("cannot open run folder " + dir + ": " + std::strerror(errno));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::close(fd);
      throw UserError("another dptrain-launch is running in " + dir +
                      " (or the job of one that was killed is still ending)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Deliberately left open: closing it would release the lock.
  return fd;
}

// Flags as given, so that `run --resume DIR` can refuse the others.
// The report of a run or sweep that ended. Its results are written by
// then; a report that cannot be made (no Chart.js) does not change the
// outcome.
void report_at_the_end(const std::string& dir) {
  try {
    std::printf("report: %s\n", write_report(dir).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dptrain-launch: report not written: %s\n", e.what());
  }
}

struct RunFlags {
  std::string config, resume, run_dir, hostfile, listen;
  int np = 0;
  int max_restarts = 3;
  double stall_timeout_s = 60;
  std::vector<std::string> sets, mpirun_args;
};

int run_subcommand(CLI::App& run, const RunFlags& f) {
  LaunchSpec spec;
  TrainSpec train;
  std::string dir;
  if (!f.resume.empty()) {
    for (const char* other : {"config", "--np", "--hostfile", "--max-restarts", "--stall-timeout",
                              "--run-dir", "--listen", "--mpirun-arg", "--set"}) {
      if (run.count(other) > 0) {
        throw UserError(std::string("run --resume DIR takes nothing else (got ") +
                        (other[0] == '-' ? other : "a CONFIG") + "); the run folder has it all");
      }
    }
    dir = absolute(f.resume);
    spec = load_launch_spec(dir);
    spec.set_run_dir(dir);  // the folder may have moved
    train = check_launch_spec(&spec);
    LauncherSummary previous;
    if (load_summary(dir, &previous) && previous.state() == "done") {
      std::printf("dptrain-launch: the run in %s has already finished; nothing to do\n",
                  dir.c_str());
      return 0;
    }
  } else {
    if (f.config.empty()) throw UserError("run needs a CONFIG (or --resume DIR)");
    if (run.count("--np") == 0) throw UserError("run needs --np N, the number of ranks");
    spec.set_config(f.config);
    for (const std::string& s : f.sets) spec.add_set(s);
    spec.set_np(f.np);
    spec.set_hostfile(f.hostfile);
    spec.set_max_restarts(f.max_restarts);
    spec.set_stall_timeout_s(static_cast<float>(f.stall_timeout_s));
    for (const std::string& a : f.mpirun_args) spec.add_mpirun_arg(a);
    spec.set_listen(f.listen);
    spec.set_run_dir(f.run_dir);
    train = check_launch_spec(&spec);
    dir = spec.run_dir().empty() ? absolute(default_run_dir(train.name(), spec.config()))
                                 : spec.run_dir();
    spec.set_run_dir(dir);
    if (std::filesystem::exists(launch_spec_path(dir))) {
      throw UserError("run folder " + dir +
                      " already holds a launcher run; continue it with: "
                      "dptrain-launch run --resume " +
                      dir);
    }
  }
  Supervisor::Options options;
  options.worker = find_worker();
  options.mpirun = find_mpirun();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError("cannot create run folder " + dir + ": " + ec.message());
  const int lock = lock_run_folder(dir);
  SessionGuard guard(lock, spec.stall_timeout_s(), launcher_log_path(dir));
  save_launch_spec(dir, spec);
  options.launch = spec;
  options.live = ::isatty(STDOUT_FILENO) != 0;
  Supervisor supervisor(std::move(options));
  const int code = supervisor.run();
  if (std::filesystem::exists(dir + "/metrics.jsonl")) report_at_the_end(dir);
  return code;
}

struct SweepFlags {
  std::string config, run_dir, resume;
};

int sweep_subcommand(CLI::App& sweep, const SweepFlags& f) {
  SweepOptions options;
  std::string dir;
  if (!f.resume.empty()) {
    if (sweep.count("config") > 0 || sweep.count("--run-dir") > 0) {
      throw UserError("sweep --resume DIR takes nothing else; the sweep folder has it all");
    }
    dir = absolute(f.resume);
    const std::string saved = dir + "/sweep.textproto";
    if (!std::filesystem::exists(saved))
      throw UserError(dir + " holds no sweep (no sweep.textproto)");
    load_text(saved, &options.spec);
    options.base = resolve_sweep_base(options.spec, saved);
  } else {
    if (f.config.empty()) throw UserError("sweep needs a SWEEP_CONFIG (or --resume DIR)");
    load_text(f.config, &options.spec);
    options.base = resolve_sweep_base(options.spec, f.config);
    validate_sweep_spec(options.spec, options.base);
    dir = f.run_dir.empty() ? absolute(default_run_dir(options.spec.name(), f.config))
                            : absolute(f.run_dir);
    if (std::filesystem::exists(dir + "/sweep.textproto")) {
      throw UserError("folder " + dir +
                      " already holds a sweep; continue it with: "
                      "dptrain-launch sweep --resume " +
                      dir);
    }
    // The folder keeps the sweep with its base inline, so that --resume
    // needs nothing outside it.
    options.spec.clear_base_config();
    options.spec.clear_set();
    *options.spec.mutable_base() = options.base;
  }
  validate_sweep_spec(options.spec, options.base);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError("cannot create sweep folder " + dir + ": " + ec.message());
  const int lock = lock_run_folder(dir);
  SessionGuard guard(lock, options.spec.stall_timeout_s(), dir + "/launcher.log");
  if (f.resume.empty()) write_file_atomically(dir + "/sweep.textproto", to_text(options.spec));
  options.dir = dir;
  options.worker = find_worker();
  options.mpirun = find_mpirun();
  options.live = ::isatty(STDOUT_FILENO) != 0;
  const int code = run_sweep(options);
  if (code == 0) report_at_the_end(dir);
  return code;
}

int launch_main(int argc, char** argv) {
  CLI::App app{
      "Runs dptrain training jobs under mpirun and keeps them alive: checkpoints, "
      "restarts after failures, a control channel to the workers.",
      "dptrain-launch"};
  app.require_subcommand(1);
  RunFlags f;
  app.footer("See `dptrain-launch run --help`.");
  CLI::App* run = app.add_subcommand(
      "run",
      "Train one config under mpirun, restarting it from its last checkpoint after failures");
  run->footer(
      "A job that fails (exit 1, a signal, no heartbeat for the stall timeout) is restarted from "
      "its last checkpoint after a back-off, up to --max-restarts times; exit 2 (a user error) "
      "is never restarted; exit 75 (preempted) is resumed without counting. The first "
      "SIGINT/SIGTERM stops the job with a checkpoint, a second one kills it.\n"
      "Exit codes: 0 finished, 1 failed, 2 user error, 75 stopped unfinished.\n"
      "The run folder gets launch.textproto, launcher.log, launcher_summary.json and "
      "worker.log beside the worker's own files.");
  run->add_option("config", f.config, "Training config (Protobuf text format)")
      ->type_name("CONFIG");
  run->add_option("--set", f.sets, "Override a config field (repeatable)")
      ->type_name("PATH=VALUE")
      ->allow_extra_args(false);
  run->add_option("--np", f.np, "Number of MPI ranks")->type_name("N");
  run->add_option("--hostfile", f.hostfile,
                  "mpirun hostfile; hosts other than localhost make the control channel listen "
                  "on every interface")
      ->type_name("FILE");
  run->add_option("--max-restarts", f.max_restarts,
                  "Failures restarted before giving up (default 3; preemptions do not count)")
      ->type_name("R");
  run->add_option("--stall-timeout", f.stall_timeout_s,
                  "Seconds without a heartbeat before the job counts as stalled (default 60)")
      ->type_name("S");
  run->add_option("--run-dir", f.run_dir, "Run folder (default runs/NAME-YYYYmmdd-HHMMSS)")
      ->type_name("DIR");
  run->add_option("--listen", f.listen,
                  "Control channel address (default 127.0.0.1, ephemeral port)")
      ->type_name("ADDR[:PORT]");
  run->add_option("--mpirun-arg", f.mpirun_args,
                  "Argument passed on to mpirun before the worker (repeatable; "
                  "--mpirun-arg=--mca for one starting with a dash)")
      ->type_name("ARG")
      ->allow_extra_args(false);
  run->add_option("--resume", f.resume,
                  "Continue the launcher run in DIR (reads DIR/launch.textproto; no other flags)")
      ->type_name("DIR");
  SweepFlags sf;
  CLI::App* sweep = app.add_subcommand(
      "sweep",
      "Run a hyperparameter sweep: trials as supervised jobs, early stopping, a leaderboard");
  sweep->footer(
      "Trials are chosen by grid, random or TPE search and stopped early by ASHA or the median "
      "rule, deterministically for the sweep's seed. The folder gets sweep.db (SQLite: trials, "
      "parameters, rung results), one trial-NNNN run folder per trial, leaderboard.csv, "
      "best.textproto and sweep_summary.json. SIGINT/SIGTERM pause the trials with checkpoints; "
      "--resume DIR continues.\nExit codes: 0 finished, 2 user error, 75 stopped.");
  sweep->add_option("config", sf.config, "Sweep config (SweepSpec, Protobuf text format)")
      ->type_name("SWEEP_CONFIG");
  sweep->add_option("--run-dir", sf.run_dir, "Sweep folder (default runs/NAME-YYYYmmdd-HHMMSS)")
      ->type_name("DIR");
  sweep->add_option("--resume", sf.resume, "Continue the sweep in DIR")->type_name("DIR");
  std::string report_dir;
  CLI::App* report = app.add_subcommand(
      "report", "Write DIR/report.html: one self-contained page about a run or a sweep folder");
  report->footer(
      "A run folder gets its learning curves, learning rate, throughput and allreduce wait, "
      "restarts and config; a sweep folder every trial's learning curve, the objective against "
      "each hyperparameter, the rungs and the leaderboard. The page needs no network to be "
      "viewed (Chart.js is inlined from Debian's libjs-chart.js). It may be written while the "
      "run goes on.");
  report->add_option("dir", report_dir, "Run or sweep folder")->type_name("DIR")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    throw UserError(e.what());
  }
  if (report->parsed()) {
    std::printf("%s\n", write_report(report_dir).c_str());
    return 0;
  }
  if (sweep->parsed()) return sweep_subcommand(*sweep, sf);
  return run_subcommand(*run, f);
}

}  // namespace
}  // namespace dptrain::launcher

int main(int argc, char** argv) {
  auto one_line = [](std::string what) {
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    return what;
  };
  if (argc >= 2 && std::strcmp(argv[1], dptrain::launcher::kSessionGuardCommand) == 0) {
    return dptrain::launcher::session_guard_main(argc, argv);
  }
  try {
    return dptrain::launcher::launch_main(argc, argv);
  } catch (const dptrain::UserError& e) {
    std::fprintf(stderr, "dptrain-launch: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dptrain-launch: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
