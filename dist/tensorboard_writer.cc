#include "dist/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/tf_record.h"

namespace dptrain {
namespace {

constexpr int kDtString = 7;  // TensorFlow's DT_STRING

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TbEvent event_at(int64_t step) {
  TbEvent e;
  e.set_wall_time(unix_seconds());
  e.set_step(step);
  return e;
}

void add_scalar(TbSummary* summary, const std::string& tag, double value) {
  TbSummary::Value* v = summary->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(std::string run_dir, std::string config)
    : run_dir_(std::move(run_dir)), config_(std::move(config)) {}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::on_start(const RunInfo& info) {
  class_names_ = info.class_names;
  char host[256] = "";
  (void)gethostname(host, sizeof host - 1);
  const auto now = static_cast<long long>(unix_seconds());
  char name[512];
  std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s.%d", now, host,
                static_cast<int>(getpid()));
  path_ = run_dir_ + "/" + name;
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) throw UserError("cannot write " + path_ + ": " + std::strerror(errno));

  TbEvent version = event_at(info.start_step);
  version.set_file_version("brain.Event:2");
  write(version);
  if (info.start_step > 0) {
    // TensorBoard keeps, of what came before, the events of steps below
    // this one: those up to the checkpoint's own step stay.
    TbEvent restart = event_at(info.start_step + 1);
    restart.mutable_session_log()->set_status(TbSessionLog::START);
    write(restart);
  }
  TbEvent config = event_at(info.start_step);
  TbSummary::Value* v = config.mutable_summary()->add_value();
  v->set_tag("config");
  v->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  v->mutable_tensor()->set_dtype(kDtString);
  v->mutable_tensor()->mutable_tensor_shape();
  v->mutable_tensor()->add_string_val(config_);
  write(config);
  flush();
}

void TensorBoardWriter::on_record(const MetricsRecord& r) {
  TbEvent e = event_at(r.step());
  TbSummary* s = e.mutable_summary();
  if (r.kind() == "train") {
    if (r.has_train_loss()) add_scalar(s, "train/loss", r.train_loss());
    if (r.has_train_accuracy()) add_scalar(s, "train/accuracy", r.train_accuracy());
    if (r.has_lr()) add_scalar(s, "train/lr", r.lr());
    if (r.has_images_per_sec()) add_scalar(s, "train/images_per_sec", r.images_per_sec());
    if (r.has_allreduce_wait_fraction())
      add_scalar(s, "train/allreduce_wait_fraction", r.allreduce_wait_fraction());
    if (r.has_active_triplet_fraction())
      add_scalar(s, "train/active_triplet_fraction", r.active_triplet_fraction());
  } else if (r.kind() == "eval") {
    if (r.has_test_loss()) add_scalar(s, "test/loss", r.test_loss());
    if (r.has_test_accuracy()) add_scalar(s, "test/accuracy", r.test_accuracy());
    if (r.has_val_loss()) add_scalar(s, "val/loss", r.val_loss());
    if (r.has_val_accuracy()) add_scalar(s, "val/accuracy", r.val_accuracy());
    if (r.has_auc_macro()) add_scalar(s, "test/auc_macro", r.auc_macro());
    if (r.has_map_macro()) add_scalar(s, "test/map_macro", r.map_macro());
    if (r.has_auc()) add_scalar(s, "test/auc", r.auc());
    if (r.has_average_precision()) add_scalar(s, "test/average_precision", r.average_precision());
    if (r.has_knn_accuracy()) add_scalar(s, "test/knn_accuracy", r.knn_accuracy());
    if (r.has_verification_auc()) add_scalar(s, "test/verification_auc", r.verification_auc());
    if (r.has_retrieval_map()) add_scalar(s, "test/retrieval_map", r.retrieval_map());
    if (r.has_test_mse()) add_scalar(s, "test/mse", r.test_mse());
    // Per class from the confusion matrix (row = true, column = predicted).
    int n = 0;
    while (n * n < r.test_confusion_size()) ++n;
    if (n * n == r.test_confusion_size()) {
      for (int c = 0; c < n; ++c) {
        int64_t predicted = 0, present = 0;
        for (int k = 0; k < n; ++k) {
          predicted += r.test_confusion(k * n + c);
          present += r.test_confusion(c * n + k);
        }
        const double hit = r.test_confusion(c * n + c);
        const std::string name =
            c < static_cast<int>(class_names_.size()) ? class_names_[c] : std::to_string(c);
        add_scalar(s, "test_precision/" + name, predicted > 0 ? hit / predicted : 0.0);
        add_scalar(s, "test_recall/" + name, present > 0 ? hit / present : 0.0);
      }
    }
  }
  if (s->value_size() == 0) return;
  write(e);
  if (r.kind() == "eval") flush();
}

void TensorBoardWriter::on_end(const RunEnd&) { flush(); }

void TensorBoardWriter::write(const TbEvent& event) {
  const std::string record = frame_tf_record(event.SerializeAsString());
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size())
    throw UserError("cannot write " + path_ + ": " + std::strerror(errno));
}

void TensorBoardWriter::flush() {
  if (file_ && std::fflush(file_) != 0)
    throw UserError("cannot write " + path_ + ": " + std::strerror(errno));
}

}  // namespace dptrain
