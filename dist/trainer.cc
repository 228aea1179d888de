#include "dist/trainer.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include <google/protobuf/util/message_differencer.h>

#include "core/batch_loader.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/dataset.h"
#include "core/engine.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/lr_schedule.h"
#include "core/optimizer.h"
#include "core/primitive.h"
#include "dist/checkpointer.h"
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
  int replica() const override { return comm_.rank(); }
  void gather(const void* local, size_t bytes, void* all) override {
    comm_.allgather(local, bytes, all);
  }

 private:
  const Communicator& comm_;
};

// Whether a reconstruction loss compares with the (normalised) input image:
// it reads "data" itself or through a Split, "data/split<k>".
bool reconstructs_input(const LossLayer& loss) {
  const std::string& target = loss.bottom_names().at(1);
  return loss.kind() == LossLayer::Kind::kReconstruction &&
         target.substr(0, target.find('/')) == "data";
}

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
    for (const std::string& file : d->files) h = fnv1a(file.data(), file.size() + 1, h);
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

// Fields that do not change what a run computes: a resume may change them.
// (Threads and rank count change rounding only, as N ranks equal one.)
TrainSpec result_fields(const TrainSpec& spec) {
  TrainSpec r = spec;
  r.clear_name();
  r.clear_runtime();
  r.clear_checkpoint();
  r.mutable_data()->clear_path();
  r.mutable_data()->clear_prefetch_batches();
  r.mutable_data()->clear_test_limit();
  r.mutable_data()->clear_class_names();
  return r;
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
  // gallery_loader: embedding runs, the training set in evaluation order.
  std::unique_ptr<BatchLoader> train_loader, eval_loader, validation_loader, gallery_loader;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LrScheduler> schedule;
  std::unique_ptr<GradientReducer> reducer;
  Timeline timeline;
  std::vector<RunHook*> hooks;
  int64_t total_steps = 0;
  // Where the run stands: after resume(), the checkpoint's position.
  int64_t step = 0;
  double wall_offset = 0;
  int64_t records = 0;  // metrics records written so far
  // When the run began, as if it had never stopped: the wall time of a
  // resumed run carries on from its checkpoint's.
  Clock::time_point start;

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
  check_same_on_all_ranks(comm, fingerprint(to_text(comparable)),
                          "the config (after --set overrides)");
  const DataSpec& d = spec.data();
  s.data = load_dataset(d, spec.seed());
  const Dataset& train = s.data.train;
  check_same_on_all_ranks(comm, fingerprint(train, s.data.test), "the training and test data");
  s.norm = Normalization::from_spec(d, train.channels);
  if (d.sampler() == DataSpec::BALANCED) {
    s.sampler = std::make_unique<DistributedSampler>(train.labels, train.classes, d.batch_size(),
                                                     comm.rank(), comm.size(), spec.seed(),
                                                     d.classes_per_batch());
  } else {
    s.sampler = std::make_unique<DistributedSampler>(train.size(), d.batch_size(), comm.rank(),
                                                     comm.size(), d.drop_last(), spec.seed());
  }
  const int accumulate = spec.solver().accumulate_steps();
  if (accumulate < 1 || s.sampler->local_batch() % accumulate != 0) {
    throw UserError("solver.accumulate_steps " + std::to_string(accumulate) +
                    " must divide the per-rank batch " + std::to_string(s.sampler->local_batch()));
  }
  const int64_t b = s.sampler->local_batch() / accumulate;
  s.replica_reducer = std::make_unique<MpiReplicaReducer>(comm);
  s.net = std::make_unique<Net>(
      spec.net(), dnnl::memory::dims{b, train.channels, train.height, train.width}, spec.seed(),
      s.replica_reducer.get(), Net::BlobMemory::kReuse, comm.local_size(), spec.precision());
  // Micro-batch and rank gradients are summed: each carries 1/(k ranks) of
  // the step's mean.
  s.net->state().loss_scale = 1.f / static_cast<float>(accumulate * comm.size());
  const LossLayer& loss = s.net->loss_layer();
  if ((loss.kind() == LossLayer::Kind::kClassifier || loss.kind() == LossLayer::Kind::kBinary) &&
      loss.classes() != train.classes) {
    throw UserError("net: the loss sees " + std::to_string(loss.classes()) +
                    " classes but the data has " + std::to_string(train.classes) +
                    (loss.kind() == LossLayer::Kind::kBinary
                         ? " (a binary loss needs data.positive_classes)"
                         : ""));
  }
  if (loss.kind() == LossLayer::Kind::kEmbedding && accumulate > 1) {
    throw UserError("solver.accumulate_steps " + std::to_string(accumulate) +
                    ": the triplet loss mines the whole global batch at once, so it must be 1");
  }
  // Every rank starts from rank 0's parameters and statistics.
  ParamStore& p = s.net->params();
  comm.broadcast(p.values(), p.size() * sizeof(float));
  comm.broadcast(p.buffer_values(), p.buffer_size() * sizeof(float));

  s.train_loader =
      std::make_unique<BatchLoader>(train, s.norm, d.augment(), static_cast<int>(b),
                                    d.prefetch_batches(), spec.seed(), d.loader_threads());
  s.eval_loader =
      std::make_unique<BatchLoader>(s.data.test, s.norm, Augmentation(), static_cast<int>(b),
                                    d.prefetch_batches(), spec.seed(), d.loader_threads());
  if (loss.kind() == LossLayer::Kind::kEmbedding) {
    s.gallery_loader =
        std::make_unique<BatchLoader>(train, s.norm, Augmentation(), static_cast<int>(b),
                                      d.prefetch_batches(), spec.seed(), d.loader_threads());
  }
  if (s.data.validation.size() > 0) {
    s.validation_loader = std::make_unique<BatchLoader>(s.data.validation, s.norm, Augmentation(),
                                                        static_cast<int>(b), d.prefetch_batches(),
                                                        spec.seed(), d.loader_threads());
  }
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

const std::vector<std::string>& Trainer::class_names() const { return s_->data.class_names; }

void Trainer::enable_timeline(int64_t first, int64_t last, int64_t every) {
  State& s = *s_;
  s.timeline.enable(first, last, every);
  s.net->state().timeline = &s.timeline;
  s.reducer->set_timeline(&s.timeline);
}

const Timeline& Trainer::timeline() const { return s_->timeline; }

RunEnvironment Trainer::environment() const {
  const State& s = *s_;
  RunEnvironment e;
  e.set_world_size(s.comm.size());
  e.set_threads_per_rank(omp_get_max_threads());
  e.set_cpu_model(cpu_model_name());
  e.set_isa(effective_isa_name());
  e.set_onednn_version(onednn_version());
  char library[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  if (MPI_Get_library_version(library, &length) == MPI_SUCCESS) {
    // "Open MPI v4.1.4, package: ..., ident: ...": the name and version.
    const std::string text(library, static_cast<size_t>(length));
    e.set_mpi_version(text.substr(0, text.find(',')));
  }
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) == 0) e.set_host(host);
  for (const std::string& name : s.data.class_names) e.add_class_names(name);
  e.set_started(utc_now());
  return e;
}

void Trainer::add_hook(RunHook* hook) { s_->hooks.push_back(hook); }

void Trainer::load_weights(const std::string& path) {
  s_->net->params().import_weights(load_weights_or_checkpoint(path), path);
}

void Trainer::init_weights(const WeightsFile& weights, const std::string& source,
                           const std::vector<std::string>& reinit) {
  ParamStore& p = s_->net->params();
  p.import_by_name(weights, source, reinit);
  s_->comm.broadcast(p.values(), p.size() * sizeof(float));
  s_->comm.broadcast(p.buffer_values(), p.buffer_size() * sizeof(float));
}

void Trainer::resume(const Checkpoint& checkpoint, const std::string& source) {
  State& s = *s_;
  google::protobuf::util::MessageDifferencer differ;
  std::string differences;
  differ.ReportDifferencesToString(&differences);
  if (!differ.Compare(result_fields(checkpoint.spec()), result_fields(s.spec))) {
    std::string fields;
    std::istringstream lines(differences);
    for (std::string line; std::getline(lines, line);)
      fields += (fields.empty() ? "" : "; ") + line;
    throw UserError("the config differs from " + source + "'s in fields that change the result (" +
                    fields + "); resume with the same config or start a new run folder");
  }
  ParamStore& p = s.net->params();
  p.import_weights(checkpoint.weights(), source);
  for (auto& [name, buffer] : s.optimizer->state()) {
    p.import_state(checkpoint.optimizer_state(), name, buffer->data(), source);
  }
  s.optimizer->set_steps_taken(checkpoint.optimizer_steps());
  if (checkpoint.step() < 0 || checkpoint.step() > s.total_steps) {
    throw UserError(source + ": step " + std::to_string(checkpoint.step()) +
                    " is outside this run's " + std::to_string(s.total_steps) + " steps");
  }
  s.step = checkpoint.step();
  s.wall_offset = checkpoint.wall_time();
  s.records = checkpoint.metrics_records();
}

Checkpoint Trainer::snapshot() const {
  const State& s = *s_;
  Checkpoint c;
  *c.mutable_spec() = s.spec;
  const ParamStore& p = s.net->params();
  *c.mutable_weights() = p.export_weights();
  for (auto& [name, buffer] : s.optimizer->state()) {
    p.export_state(buffer->data(), name, c.mutable_optimizer_state());
  }
  c.set_optimizer_steps(s.optimizer->steps_taken());
  c.set_step(s.step);
  c.set_epoch(s.step / s.sampler->steps_per_epoch());
  c.set_samples_seen(s.step * s.spec.data().batch_size());
  c.set_world_size(s.comm.size());
  c.set_threads(omp_get_max_threads());
  c.set_metrics_records(s.records);
  c.set_wall_time(seconds_since(s.start));
  return c;
}

Evaluation Trainer::evaluate() { return evaluate_on(*s_->eval_loader, s_->data.test.size(), true); }

EvalShard Trainer::outputs(bool train_set) {
  State& s = *s_;
  EvalShard shard = train_set ? forward_shard(*s.gallery_loader, s.data.train.size(), false)
                              : forward_shard(*s.eval_loader, s.data.test.size(), false);
  shard.scores = s.comm.allgather_concat(shard.scores);
  shard.labels = s.comm.allgather_concat(shard.labels);
  return shard;
}

Trainer::Reconstructions Trainer::reconstruct(int64_t count) {
  State& s = *s_;
  Net& net = *s.net;
  const LossLayer& loss = net.loss_layer();
  if (loss.kind() != LossLayer::Kind::kReconstruction) {
    throw UserError("the net's loss is " + loss.type() +
                    ", not a reconstruction's (MSELoss or L1Loss)");
  }
  const Dataset& test = s.data.test;
  Reconstructions r;
  r.count = std::min<int64_t>(count, test.size());
  r.channels = test.channels;
  r.height = test.height;
  r.width = test.width;
  const Blob& out = net.blob(loss.bottom_names().at(0));
  if (out.dims() != net.input_dims()) {
    throw UserError("the net's output '" + out.name + "' is not of the input's shape");
  }
  const int64_t sample = test.sample_size();
  std::vector<float> plain(static_cast<size_t>(net.input_dims()[0] * sample));
  dnnl::memory plain_out(plain_desc(out.dims()), cpu_engine(), plain.data());
  const BoundPrimitive to_plain = make_reorder(out.data, plain_out);
  std::vector<int64_t> first(static_cast<size_t>(r.count));
  std::iota(first.begin(), first.end(), 0);
  s.eval_loader->start(0, first, false);
  while (const Batch* batch = s.eval_loader->next()) {
    net.set_input(batch->images, batch->labels, batch->count);
    net.forward(false);
    to_plain.run();
    cpu_stream().wait();
    r.inputs.insert(r.inputs.end(), batch->images, batch->images + batch->count * sample);
    r.outputs.insert(r.outputs.end(), plain.begin(), plain.begin() + batch->count * sample);
    r.labels.insert(r.labels.end(), batch->labels, batch->labels + batch->count);
  }
  // Back to pixels: x * std + mean per channel (the output too, where it
  // was trained against the normalised input).
  const int64_t plane = static_cast<int64_t>(r.height) * r.width;
  auto pixels = [&](std::vector<float>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      const auto c = static_cast<int>((static_cast<int64_t>(i) / plane) % r.channels);
      v[i] = v[i] * s.norm.std_of(c) + s.norm.mean_of(c);
    }
  };
  pixels(r.inputs);
  if (reconstructs_input(loss)) pixels(r.outputs);
  return r;
}

EvalShard Trainer::forward_shard(BatchLoader& loader, int64_t samples, bool with_loss) {
  State& s = *s_;
  Net& net = *s.net;
  net.state().compute_loss = with_loss;
  EvalShard shard;
  loader.start(0, eval_shard(samples, s.comm.rank(), s.comm.size()), false);
  while (const Batch* batch = loader.next()) {
    net.set_input(batch->images, batch->labels, batch->count);
    net.forward(false);
    shard.add(net.loss_layer(), batch->labels, batch->count);
    shard.skipped += batch->skipped;
    for (RunHook* hook : s.hooks) hook->on_eval_batch(s.step);
  }
  net.state().compute_loss = true;
  return shard;
}

Evaluation Trainer::evaluate_on(BatchLoader& loader, int64_t samples, bool with_ranking) {
  State& s = *s_;
  const Clock::time_point t0 = Clock::now();
  const EvalShard shard = forward_shard(loader, samples, true);
  const double pass = seconds_since(t0);
  EvalShard gallery;
  const Clock::time_point t1 = Clock::now();
  if (s.gallery_loader) gallery = forward_shard(*s.gallery_loader, s.data.train.size(), false);
  const double gallery_pass = seconds_since(t1);
  const Clock::time_point t2 = Clock::now();
  EvalSetting setting;
  const LossLayer& loss = s.net->loss_layer();
  setting.kind = loss.kind();
  setting.classes = s.data.train.classes;
  setting.class_names = s.data.class_names;
  if (reconstructs_input(loss)) {
    // The target is the normalised input: its errors scale back by std^2.
    for (int c = 0; c < s.data.train.channels; ++c) {
      const double sd = s.norm.std_of(c);
      setting.pixel_scale.push_back(sd * sd);
    }
  }
  Evaluation e = finish_evaluation(s.comm, setting, shard, &gallery, with_ranking);
  if (log_enabled(LogLevel::kDebug)) {
    char line[160];
    std::snprintf(line, sizeof line,
                  "evaluation: forward %.3f s, gallery forward %.3f s, figures %.3f s", pass,
                  gallery_pass, seconds_since(t2));
    log_debug(line);
  }
  return e;
}

Trainer::Result Trainer::run(Checkpointer* checkpointer, int64_t stop_at_step,
                             const std::vector<int>& rung_epochs) {
  State& s = *s_;
  Net& net = *s.net;
  ParamStore& params = net.params();
  const SolverSpec& solver = s.spec.solver();
  const RuntimeSpec& rt = s.spec.runtime();
  const int accumulate = solver.accumulate_steps();
  const int64_t global_batch = s.spec.data().batch_size();
  const int64_t local_batch = s.sampler->local_batch();
  const int64_t micro_batch = local_batch / accumulate;
  const int64_t steps_per_epoch = s.sampler->steps_per_epoch();
  const int eval_every = rt.eval_every_epochs();

  if (s.leader) {
    write_file_atomically(s.run_dir + "/config.textproto", to_text(s.spec));
    write_file_atomically(s.run_dir + "/environment.textproto", to_text(environment()));
  }
  s.start = Clock::now() - std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(s.wall_offset));
  auto wall = [&] { return seconds_since(s.start); };
  RunInfo info;
  info.name = s.spec.name();
  info.run_dir = s.run_dir;
  info.net_summary = net.summary();
  info.rank = s.comm.rank();
  info.world_size = s.comm.size();
  info.threads = omp_get_max_threads();
  info.samples = s.data.train.size();
  info.global_batch = global_batch;
  info.epochs = solver.epochs();
  info.steps_total = s.total_steps;
  info.steps_per_epoch = steps_per_epoch;
  info.start_step = s.step;
  info.metrics_records = s.records;
  info.start_wall_time = s.wall_offset;
  info.class_names = s.data.class_names;
  for (RunHook* hook : s.hooks) hook->on_start(info);

  auto emit = [&](const MetricsRecord& record) {
    ++s.records;
    for (RunHook* hook : s.hooks) hook->on_record(record);
  };
  const Net::GradsFinal on_grads = [&](size_t offset) { s.reducer->grads_final(offset); };
  const bool embedding = net.loss_layer().kind() == LossLayer::Kind::kEmbedding;
  const bool reconstruction = net.loss_layer().kind() == LossLayer::Kind::kReconstruction;
  double window_loss = 0;
  // Correct predictions, or (embeddings) the steps' active triplet fractions.
  double window_hits = 0;
  int64_t window_steps = 0, window_skipped = 0;
  // Where the window's steps spent their time (StepTime's fields, summed).
  enum Phase { kStep, kData, kForward, kBackward, kAllreduce, kOptimizer, kPrimitives, kPhases };
  std::array<double, kPhases> window_phase{};
  const Layer::Work work = net.work();
  double last_accuracy = 0;
  int64_t& step = s.step;
  // A run resumed at an epoch's end has already evaluated it.
  bool evaluated_last = step > 0 && step % steps_per_epoch == 0 && eval_every > 0 &&
                        (step / steps_per_epoch) % eval_every == 0;

  auto evaluation = [&](int64_t epoch) {
    const int64_t start = Timeline::now_us();
    const Clock::time_point t0 = Clock::now();
    const Evaluation test = evaluate();
    last_accuracy = test.accuracy;
    MetricsRecord r;
    r.set_kind("eval");
    r.set_epoch(static_cast<int32_t>(epoch));
    r.set_step(static_cast<int32_t>(step));
    test.fill_test(&r);
    if (s.validation_loader) {
      const Evaluation val = evaluate_on(*s.validation_loader, s.data.validation.size(), false);
      r.set_val_loss(val.loss);
      r.set_val_accuracy(val.accuracy);
    }
    if (s.leader && !test.roc.empty()) {
      write_file_atomically(s.run_dir + "/roc_epoch" + std::to_string(epoch) + ".csv",
                            test.roc_csv());
    }
    r.set_eval_seconds(seconds_since(t0));
    r.set_wall_time(wall());
    s.timeline.run_span("eval", "evaluation", start, Timeline::now_us());
    return r;
  };
  auto evaluate_and_log = [&](int64_t epoch) {
    MetricsRecord r = evaluation(epoch);
    emit(r);
    return r;
  };
  // Rank 0's hooks decide whether the run goes on past a rung.
  auto go_on_past_rung = [&](const MetricsRecord& eval) {
    uint64_t go_on = 1;
    for (RunHook* hook : s.hooks) {
      if (auto decided = hook->at_rung(eval, step)) go_on = go_on && *decided;
    }
    s.comm.broadcast(&go_on, sizeof go_on);
    return go_on != 0;
  };
  auto stopped = [&] {
    RunEnd end;
    end.step = step;
    end.wall_time = wall();
    end.stopped = true;
    end.checkpoint = checkpointer ? checkpointer->flush() : "";
    s.comm.barrier();
    for (RunHook* hook : s.hooks) hook->on_end(end);
    return Result{last_accuracy, true};
  };
  const std::set<int> rungs(rung_epochs.begin(), rung_epochs.end());
  // Resumed from a rung's checkpoint: its decision may never have been
  // heard, so pause there again (the evaluation is repeated, not logged).
  if (step > 0 && step < s.total_steps && step % steps_per_epoch == 0 &&
      rungs.count(static_cast<int>(step / steps_per_epoch)) > 0 &&
      !go_on_past_rung(evaluation(step / steps_per_epoch))) {
    return stopped();
  }

  for (int64_t epoch = step / steps_per_epoch; epoch < solver.epochs() && step < s.total_steps;
       ++epoch) {
    const int64_t first = step - epoch * steps_per_epoch;  // non-zero only when resuming mid-epoch
    std::vector<int64_t> indices = s.sampler->epoch_indices(epoch);
    indices.erase(indices.begin(), indices.begin() + first * local_batch);
    s.train_loader->start(epoch, std::move(indices), true);
    evaluated_last = false;
    for (int64_t i = first; i < steps_per_epoch && step < s.total_steps; ++i) {
      const Clock::time_point step_start = Clock::now();
      const double primitives_before = primitive_seconds();
      s.timeline.set_step(step);
      for (RunHook* hook : s.hooks) hook->before_step(step);
      unsigned agreed = kNoRequest;
      for (RunHook* hook : s.hooks) agreed |= hook->requests();
      MPI_Request agreement = s.comm.start_allreduce_or(&agreed);
      const float lr = s.schedule->lr(step);
      float loss = 0;
      double hits = 0;
      for (int micro = 0; micro < accumulate; ++micro) {
        const Batch* batch = nullptr;
        {
          StepSpan wait(&s.timeline, "data", "wait for batch");
          const Clock::time_point t0 = Clock::now();
          batch = s.train_loader->next();
          window_phase[kData] += seconds_since(t0);
        }
        window_skipped += batch->skipped;
        const Clock::time_point t0 = Clock::now();
        net.set_input(batch->images, batch->labels, batch->count);
        net.state().step = step;
        net.state().sample_offset = s.comm.rank() * local_batch + micro * micro_batch;
        net.forward(true);
        const Clock::time_point t1 = Clock::now();
        const bool last = micro + 1 == accumulate;
        net.backward(last ? &on_grads : nullptr);
        if (!last) s.reducer->accumulate();
        const double backward = seconds_since(t1);
        const double forward = std::chrono::duration<double>(t1 - t0).count();
        window_phase[kForward] += forward;
        window_phase[kBackward] += backward;
        loss += net.loss_layer().loss() / static_cast<float>(accumulate);
        hits += embedding ? net.loss_layer().active_fraction()
                          : static_cast<double>(net.loss_layer().correct());
      }
      const Clock::time_point t0 = Clock::now();
      s.reducer->finish();
      const Clock::time_point t1 = Clock::now();
      window_phase[kPrimitives] += primitive_seconds() - primitives_before;
      {
        StepSpan update(&s.timeline, "optimizer", "step");
        if (solver.clip_grad_norm() > 0)
          clip_grad_norm(params.grads(), params.size(), solver.clip_grad_norm());
        s.optimizer->step(params.values(), params.grads(), lr);
      }
      s.timeline.end_step();
      window_phase[kAllreduce] += std::chrono::duration<double>(t1 - t0).count();
      window_phase[kOptimizer] += seconds_since(t1);
      ++step;
      s.comm.wait(agreement, "the step's checkpoint agreement");

      if (!std::isfinite(loss)) {
        throw UserError("training diverged: loss is " + std::to_string(loss) + " at step " +
                        std::to_string(step) + " (lower solver.base_lr?)");
      }
      window_loss += loss;
      window_hits += hits;
      ++window_steps;
      for (RunHook* hook : s.hooks)
        hook->after_step({epoch + 1, step, i + 1, s.total_steps, lr, loss, wall()});
      window_phase[kStep] += seconds_since(step_start);

      const bool epoch_end = i + 1 == steps_per_epoch;
      if (step % rt.log_every_steps() == 0 || step == s.total_steps || epoch_end) {
        // Loss and accuracy over all ranks; the step takes as long as the
        // slowest rank's compute.
        double sums[3 + kPhases] = {window_loss, window_hits, static_cast<double>(window_skipped)};
        std::copy(window_phase.begin(), window_phase.end(), sums + 3);
        s.comm.allreduce_sum(sums, 3 + kPhases);
        // Compute: forward, backward, the allreduce wait and the update.
        double timing[2] = {window_phase[kForward] + window_phase[kBackward] +
                                window_phase[kAllreduce] + window_phase[kOptimizer],
                            s.reducer->take_wait_seconds()};
        s.comm.allreduce_max(timing, 2);
        const double images = static_cast<double>(window_steps * global_batch);
        MetricsRecord r;
        r.set_kind("train");
        r.set_epoch(static_cast<int32_t>(epoch + 1));
        r.set_step(static_cast<int32_t>(step));
        r.set_train_loss(sums[0] / static_cast<double>(s.comm.size() * window_steps));
        if (embedding) {
          r.set_active_triplet_fraction(sums[1] /
                                        static_cast<double>(s.comm.size() * window_steps));
        } else if (!reconstruction) {
          r.set_train_accuracy(sums[1] / images);
        }
        if (sums[2] > 0) r.set_skipped_images(static_cast<int32_t>(sums[2]));
        r.set_lr(lr);
        r.set_images_per_sec(images / timing[0]);
        r.set_allreduce_wait_fraction(timing[1] / timing[0]);
        r.set_wall_time(wall());
        const double per_step = 1e3 / static_cast<double>(s.comm.size() * window_steps);
        StepTime& t = *r.mutable_step_time();
        t.set_step_ms(sums[3 + kStep] * per_step);
        t.set_data_wait_ms(sums[3 + kData] * per_step);
        t.set_forward_ms(sums[3 + kForward] * per_step);
        t.set_backward_ms(sums[3 + kBackward] * per_step);
        t.set_allreduce_wait_ms(sums[3 + kAllreduce] * per_step);
        t.set_optimizer_ms(sums[3 + kOptimizer] * per_step);
        t.set_primitives_ms(sums[3 + kPrimitives] * per_step);
        t.set_gflop(2e-9 * static_cast<double>(accumulate * (work.forward + work.backward)));
        t.set_gradient_floats(static_cast<int32_t>(params.size()));
        emit(r);
        window_phase.fill(0);
        window_loss = 0;
        window_hits = 0;
        window_steps = window_skipped = 0;
      }
      const bool rung =
          epoch_end && rungs.count(static_cast<int>(epoch + 1)) > 0 && step < s.total_steps;
      MetricsRecord eval;
      if (epoch_end && ((eval_every > 0 && (epoch + 1) % eval_every == 0) || rung)) {
        eval = evaluate_and_log(epoch + 1);
        evaluated_last = true;
      }
      // Checkpoint last, so that a resume from it repeats nothing logged.
      bool stop = (agreed & kStopRequest) || step == stop_at_step;
      if (checkpointer && (stop || rung || checkpointer->due(step, epoch_end, epoch + 1, agreed))) {
        const int64_t start = Timeline::now_us();
        checkpointer->save([this] { return snapshot(); });
        s.timeline.run_span("checkpoint", "snapshot", start, Timeline::now_us());
      }
      if (rung && !stop) {
        // Paused until a hook (the launcher, over the control channel)
        // decides; the checkpoint is durable first, so a stopped trial
        // keeps it.
        checkpointer->flush();
        stop = !go_on_past_rung(eval);
      }
      if (stop) return stopped();
    }
  }
  if (!evaluated_last) {
    evaluate_and_log(static_cast<int64_t>(
        std::ceil(static_cast<double>(step) / static_cast<double>(steps_per_epoch))));
  }
  if (s.leader) save_weights(s.run_dir + "/final_weights", params.export_weights());
  RunEnd end;
  end.step = step;
  end.wall_time = wall();
  if (checkpointer) end.checkpoint = checkpointer->flush();
  for (RunHook* hook : s.hooks) hook->on_end(end);
  return {last_accuracy, false};
}

}  // namespace dptrain
