#include "dist/trainer.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/batch_loader.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/lr_schedule.h"
#include "core/optimizer.h"
#include "dist/distributed_sampler.h"
#include "dist/gradient_reducer.h"

namespace dptrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Synchronized BatchNorm's view of the other replicas.
class MpiReplicaReducer : public ReplicaReducer {
 public:
  explicit MpiReplicaReducer(const Communicator& comm) : comm_(comm) {}
  void sum(double* data, size_t count) override { comm_.allreduce_sum(data, count); }
  int replicas() const override { return comm_.size(); }

 private:
  const Communicator& comm_;
};

std::string format_duration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%dh%02dm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  }
  return buf;
}

// Appends one JSON object per line and flushes it, so a crashed run keeps
// every record written before.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : file_(std::fopen(path.c_str(), "w")) {
    if (!file_) throw UserError("cannot write " + path);
  }
  ~MetricsLog() { std::fclose(file_); }
  void write(const std::string& line) {
    std::fputs(line.c_str(), file_);
    std::fputc('\n', file_);
    std::fflush(file_);
  }

 private:
  std::FILE* file_;
};

class Json {
 public:
  Json& add(const char* key, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.8g", v);
    return raw(key, std::isfinite(v) ? buf : "null");
  }
  Json& add(const char* key, int64_t v) { return raw(key, std::to_string(v)); }
  Json& add(const char* key, const char* v) { return raw(key, std::string("\"") + v + "\""); }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  Json& raw(const char* key, const std::string& v) {
    body_ += (body_.empty() ? "\"" : ",\"") + std::string(key) + "\":" + v;
    return *this;
  }
  std::string body_;
};

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t fingerprint(const std::string& text) { return fnv1a(text.data(), text.size()); }

uint64_t fingerprint(const Dataset& train, const Dataset& test) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const Dataset* d : {&train, &test}) {
    const int64_t shape[] = {d->size(), d->channels, d->height, d->width, d->classes};
    h = fnv1a(shape, sizeof shape, h);
    h = fnv1a(d->labels.data(), d->labels.size() * sizeof(int32_t), h);
  }
  return h;
}

// Ranks that would train different things must not start: they would
// average gradients of different models or data, silently.
void check_same_on_all_ranks(const Communicator& comm, uint64_t value, const std::string& what) {
  int64_t lo = static_cast<int64_t>(value), hi = lo;
  comm.allreduce_min_max(&lo, &hi);
  if (lo != hi) {
    throw UserError(what + " differs between ranks (this is rank " + std::to_string(comm.rank()) +
                    "); every rank must see the same");
  }
}

// A progress bar on a terminal, plain lines otherwise. Under mpirun every
// rank's stdout is a pseudo-terminal whatever the user's is, so lines
// there; DPTRAIN_PROGRESS=bar or =lines decides explicitly.
bool show_progress_bar() {
  const char* choice = std::getenv("DPTRAIN_PROGRESS");
  if (choice && std::string(choice) == "bar") return true;
  if (choice && std::string(choice) == "lines") return false;
  return isatty(STDOUT_FILENO) && !std::getenv("OMPI_COMM_WORLD_SIZE");
}

// DPTRAIN_FAULT=KIND:RANK:STEP makes that rank fail at that step, KIND
// being throw, kill or hang: how the tests check that a failing or stalled
// rank ends the whole job.
struct Fault {
  std::string kind;
  int rank = -1;
  int64_t step = -1;
};

Fault fault_from_env() {
  Fault f;
  const char* env = std::getenv("DPTRAIN_FAULT");
  if (!env) return f;
  char kind[16] = {};
  long long step = -1;
  if (std::sscanf(env, "%15[a-z]:%d:%lld", kind, &f.rank, &step) != 3) {
    throw UserError(std::string("DPTRAIN_FAULT must be throw|kill|hang:RANK:STEP, got '") + env +
                    "'");
  }
  f.kind = kind;
  f.step = step;
  return f;
}

// The solver with the linear scaling rule applied: base_lr scaled by the
// global batch over the reference batch, the warmup starting from the
// unscaled rate.
SolverSpec scaled_solver(const TrainSpec& spec) {
  SolverSpec solver = spec.solver();
  if (solver.lr_scaling() != SolverSpec::LINEAR) return solver;
  const double factor = static_cast<double>(spec.data().batch_size()) /
                        static_cast<double>(solver.lr_reference_batch());
  solver.set_base_lr(static_cast<float>(solver.base_lr() * factor));
  LrSchedule* schedule = solver.mutable_lr_schedule();
  if (schedule->warmup_epochs() > 0 && !schedule->has_warmup_start_factor()) {
    schedule->set_warmup_start_factor(static_cast<float>(std::min(1.0, 1.0 / factor)));
  }
  return solver;
}

}  // namespace

int choose_threads(const TrainSpec& spec, const Communicator& comm) {
  if (spec.runtime().threads() > 0) return spec.runtime().threads();
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) {
    return std::atoi(env);
  }
  cpu_set_t set;
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    // A rank bound to fewer cores by mpirun gets only those.
    cores = std::min(cores, CPU_COUNT(&set) * comm.local_size());
  }
  return std::max(1, cores / comm.local_size());
}

struct Trainer::State {
  TrainSpec spec;
  const Communicator& comm;
  std::string run_dir;
  bool leader;
  DatasetSplits data;
  Normalization norm;
  std::unique_ptr<MpiReplicaReducer> replica_reducer;
  std::unique_ptr<Net> net;
  std::unique_ptr<DistributedSampler> sampler;
  std::unique_ptr<BatchLoader> train_loader, eval_loader;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LrScheduler> schedule;
  std::unique_ptr<GradientReducer> reducer;
  std::vector<Observer> observers;
  int64_t total_steps = 0;

  State(const TrainSpec& s, const Communicator& c, std::string dir)
      : spec(s), comm(c), run_dir(std::move(dir)), leader(c.rank() == 0) {}
};

Trainer::Trainer(const TrainSpec& spec, const Communicator& comm, std::string run_dir)
    : s_(std::make_unique<State>(spec, comm, std::move(run_dir))) {
  State& s = *s_;
  omp_set_num_threads(choose_threads(spec, comm));
  // data.path may differ (node-local copies); the data's own fingerprint is
  // checked below.
  TrainSpec comparable = spec;
  comparable.mutable_data()->clear_path();
  check_same_on_all_ranks(comm, fingerprint(to_text(comparable)), "the config (after --set overrides)");
  const DataSpec& d = spec.data();
  s.data = load_dataset(d, spec.seed());
  const Dataset& train = s.data.train;
  check_same_on_all_ranks(comm, fingerprint(train, s.data.test), "the training and test data");
  s.norm = Normalization::from_spec(d, train.channels);
  s.sampler = std::make_unique<DistributedSampler>(train.size(), d.batch_size(), comm.rank(),
                                                   comm.size(), d.drop_last(), spec.seed());
  const int accumulate = spec.solver().accumulate_steps();
  if (accumulate < 1 || s.sampler->local_batch() % accumulate != 0) {
    throw UserError("solver.accumulate_steps " + std::to_string(accumulate) +
                    " must divide the per-rank batch " + std::to_string(s.sampler->local_batch()));
  }
  const int64_t b = s.sampler->local_batch() / accumulate;
  s.replica_reducer = std::make_unique<MpiReplicaReducer>(comm);
  s.net = std::make_unique<Net>(spec.net(), dnnl::memory::dims{b, train.channels, train.height, train.width},
                                spec.seed(), s.replica_reducer.get());
  s.net->state().rank = comm.rank();
  // Micro-batch gradients are summed: each carries 1/k of the step's mean.
  s.net->state().loss_scale = 1.f / static_cast<float>(accumulate);
  if (s.net->loss_layer().classes() != train.classes) {
    throw UserError("net: the loss sees " + std::to_string(s.net->loss_layer().classes()) +
                    " classes but the data has " + std::to_string(train.classes));
  }
  // Every rank starts from rank 0's parameters and statistics.
  ParamStore& p = s.net->params();
  comm.broadcast(p.values(), p.size() * sizeof(float));
  comm.broadcast(p.buffer_values(), p.buffer_size() * sizeof(float));

  s.train_loader = std::make_unique<BatchLoader>(train, s.norm, d.augment(), static_cast<int>(b),
                                                 d.prefetch_batches(), spec.seed());
  s.eval_loader = std::make_unique<BatchLoader>(s.data.test, s.norm, Augmentation(),
                                                static_cast<int>(b), d.prefetch_batches(),
                                                spec.seed());
  const SolverSpec solver = scaled_solver(spec);
  s.total_steps = s.sampler->steps_per_epoch() * solver.epochs();
  if (solver.max_steps() > 0) s.total_steps = std::min(s.total_steps, solver.max_steps());
  s.optimizer = Optimizer::create(solver, p.size());
  s.schedule = std::make_unique<LrScheduler>(solver, s.sampler->steps_per_epoch(), s.total_steps);
  std::vector<size_t> offsets;
  for (const auto& param : p.params()) offsets.push_back(param->offset);
  const RuntimeSpec& rt = spec.runtime();
  s.reducer = std::make_unique<GradientReducer>(comm, p.grads(), p.size(), offsets, rt.bucket_mb(),
                                                rt.overlap_allreduce(), accumulate);
}

Trainer::~Trainer() = default;

Net& Trainer::net() { return *s_->net; }

void Trainer::add_observer(Observer observer) { s_->observers.push_back(std::move(observer)); }

void Trainer::load_weights(const std::string& path) {
  s_->net->params().import_weights(dptrain::load_weights(path), path);
}

ConfusionMatrix Trainer::evaluate(double* mean_loss) {
  State& s = *s_;
  Net& net = *s.net;
  const LossLayer& loss = net.loss_layer();
  ConfusionMatrix confusion(loss.classes());
  double loss_sum = 0;
  s.eval_loader->start(0, eval_shard(s.data.test.size(), s.comm.rank(), s.comm.size()), false);
  while (const Batch* batch = s.eval_loader->next()) {
    net.set_input(batch->images, batch->labels, batch->count);
    net.forward(false);
    confusion.add(batch->labels, loss.predictions().data(), batch->count);
    loss_sum += static_cast<double>(loss.loss()) * static_cast<double>(batch->count);
  }
  s.comm.allreduce_sum(confusion.counts().data(), confusion.counts().size());
  s.comm.allreduce_sum(&loss_sum, 1);
  if (mean_loss) *mean_loss = confusion.total() > 0 ? loss_sum / static_cast<double>(confusion.total()) : 0;
  return confusion;
}

double Trainer::run() {
  State& s = *s_;
  Net& net = *s.net;
  ParamStore& params = net.params();
  const SolverSpec& solver = s.spec.solver();
  const RuntimeSpec& rt = s.spec.runtime();
  const int accumulate = solver.accumulate_steps();
  const int64_t global_batch = s.spec.data().batch_size();
  const int64_t steps_per_epoch = s.sampler->steps_per_epoch();
  const bool tty = s.leader && show_progress_bar();

  std::unique_ptr<MetricsLog> log;
  if (s.leader) {
    write_file_atomically(s.run_dir + "/config.textproto", to_text(s.spec));
    log = std::make_unique<MetricsLog>(s.run_dir + "/metrics.jsonl");
    std::printf("dptrain: %s on %lld samples, %d rank(s) x %d thread(s), global batch %lld, "
                "%lld steps\n%s\n",
                s.spec.name().empty() ? "net" : s.spec.name().c_str(),
                static_cast<long long>(s.data.train.size()), s.comm.size(), omp_get_max_threads(),
                static_cast<long long>(global_batch), static_cast<long long>(s.total_steps),
                net.summary().c_str());
    std::fflush(stdout);
  }

  const Fault fault = fault_from_env();
  const Clock::time_point start = Clock::now();
  const Net::GradsFinal on_grads = [&](size_t offset) { s.reducer->grads_final(offset); };
  double window_compute = 0, window_loss = 0;
  int64_t window_correct = 0, window_steps = 0;
  double last_accuracy = 0;
  int64_t step = 0;
  bool evaluated_last = false;
  double last_draw = -1;

  auto evaluate_and_log = [&](int64_t epoch) {
    double test_loss = 0;
    ConfusionMatrix cm = evaluate(&test_loss);
    last_accuracy = cm.accuracy();
    if (!s.leader) return;
    log->write(Json()
                   .add("kind", "eval")
                   .add("epoch", epoch)
                   .add("step", step)
                   .add("test_loss", test_loss)
                   .add("test_accuracy", last_accuracy)
                   .add("wall_time", seconds_since(start))
                   .str());
    std::printf("%sepoch %lld  step %lld  test_loss %.4f  test_accuracy %.4f\n", tty ? "\r\033[K" : "",
                static_cast<long long>(epoch), static_cast<long long>(step), test_loss, last_accuracy);
    std::fflush(stdout);
  };

  for (int64_t epoch = 0; epoch < solver.epochs() && step < s.total_steps; ++epoch) {
    s.train_loader->start(epoch, s.sampler->epoch_indices(epoch), true);
    evaluated_last = false;
    for (int64_t i = 0; i < steps_per_epoch && step < s.total_steps; ++i) {
      if (fault.rank == s.comm.rank() && fault.step == step) {
        if (fault.kind == "kill") std::raise(SIGKILL);
        while (fault.kind == "hang") std::this_thread::sleep_for(std::chrono::seconds(1));
        throw std::runtime_error("injected fault at step " + std::to_string(step));
      }
      const float lr = s.schedule->lr(step);
      float loss = 0;
      int64_t correct = 0;
      double compute = 0;
      for (int micro = 0; micro < accumulate; ++micro) {
        const Batch* batch = s.train_loader->next();
        const Clock::time_point t0 = Clock::now();
        net.set_input(batch->images, batch->labels, batch->count);
        net.state().step = step * accumulate + micro;
        net.forward(true);
        const bool last = micro + 1 == accumulate;
        net.backward(last ? &on_grads : nullptr);
        if (!last) s.reducer->accumulate();
        compute += seconds_since(t0);
        loss += net.loss_layer().loss() / static_cast<float>(accumulate);
        correct += net.loss_layer().correct();
      }
      const Clock::time_point t0 = Clock::now();
      s.reducer->finish();
      if (solver.clip_grad_norm() > 0) clip_grad_norm(params.grads(), params.size(), solver.clip_grad_norm());
      s.optimizer->step(params.values(), params.grads(), lr);
      window_compute += compute + seconds_since(t0);
      ++step;

      if (!std::isfinite(loss)) {
        throw UserError("training diverged: loss is " + std::to_string(loss) + " at step " +
                        std::to_string(step) + " (lower solver.base_lr?)");
      }
      window_loss += loss;
      window_correct += correct;
      ++window_steps;
      for (const auto& observe : s.observers) observe({epoch + 1, step, s.total_steps, lr, loss});

      if (step % rt.log_every_steps() == 0 || step == s.total_steps || i + 1 == steps_per_epoch) {
        // Loss and accuracy over all ranks; the step takes as long as the
        // slowest rank's compute.
        double sums[2] = {window_loss, static_cast<double>(window_correct)};
        s.comm.allreduce_sum(sums, 2);
        double timing[2] = {window_compute, s.reducer->take_wait_seconds()};
        s.comm.allreduce_max(timing, 2);
        window_compute = timing[0];
        const double images = static_cast<double>(window_steps * global_batch);
        const double train_loss = sums[0] / static_cast<double>(s.comm.size() * window_steps);
        const double train_acc = sums[1] / images;
        const double ips = images / window_compute;
        if (s.leader) {
          log->write(Json()
                         .add("kind", "train")
                         .add("epoch", epoch + 1)
                         .add("step", step)
                         .add("train_loss", train_loss)
                         .add("train_accuracy", train_acc)
                         .add("lr", static_cast<double>(lr))
                         .add("images_per_sec", ips)
                         .add("allreduce_wait_fraction", timing[1] / window_compute)
                         .add("wall_time", seconds_since(start))
                         .str());
          const double elapsed = seconds_since(start);
          const double eta = elapsed / static_cast<double>(step) * static_cast<double>(s.total_steps - step);
          if (!tty) {
            std::printf("epoch %lld  step %lld/%lld  loss %.4f  acc %.4f  lr %.4g  %.0f img/s  eta %s\n",
                        static_cast<long long>(epoch + 1), static_cast<long long>(step),
                        static_cast<long long>(s.total_steps), train_loss, train_acc,
                        static_cast<double>(lr), ips, format_duration(eta).c_str());
            std::fflush(stdout);
          }
        }
        window_compute = window_loss = 0;
        window_correct = window_steps = 0;
      }
      if (tty && seconds_since(start) - last_draw > 0.2) {
        last_draw = seconds_since(start);
        const int width = 30;
        const int filled = static_cast<int>(width * (i + 1) / steps_per_epoch);
        const double eta = last_draw / static_cast<double>(step) * static_cast<double>(s.total_steps - step);
        const double rate = static_cast<double>(step * global_batch) / last_draw;
        std::printf("\r\033[Kepoch %lld/%d [%s%s] %lld/%lld  loss %.4f  %.0f img/s  eta %s",
                    static_cast<long long>(epoch + 1), solver.epochs(),
                    std::string(static_cast<size_t>(filled), '=').c_str(),
                    std::string(static_cast<size_t>(width - filled), ' ').c_str(),
                    static_cast<long long>(i + 1), static_cast<long long>(steps_per_epoch),
                    static_cast<double>(loss), rate, format_duration(eta).c_str());
        std::fflush(stdout);
      }
    }
    const int every = rt.eval_every_epochs();
    if (every > 0 && (epoch + 1) % every == 0) {
      evaluate_and_log(epoch + 1);
      evaluated_last = true;
    }
  }
  if (!evaluated_last) evaluate_and_log(static_cast<int64_t>(std::ceil(static_cast<double>(step) / static_cast<double>(steps_per_epoch))));
  if (s.leader) {
    save_weights(s.run_dir + "/final_weights", params.export_weights());
    std::printf("done: %lld steps in %s, test accuracy %.4f, run folder %s\n",
                static_cast<long long>(step), format_duration(seconds_since(start)).c_str(),
                last_accuracy, s.run_dir.c_str());
  }
  return last_accuracy;
}

}  // namespace dptrain
