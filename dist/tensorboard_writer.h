// TensorBoard event files in the run folder (rank 0), so that TensorBoard,
// where people have it, follows a run live: `tensorboard --logdir RUN_DIR`.
// One file per start, events.out.tfevents.<unix time>.<host>.<pid>,
// records framed as TFRecords (core/tf_record.h) holding TbEvent messages
// (core/dptrain.proto, TensorBoard's field numbers):
//   - first the file version, then the config as a text summary ("config");
//   - a resumed start writes a SessionLog START one step past its
//     checkpoint, which makes TensorBoard drop what an earlier start wrote
//     past the checkpoint and keep what it wrote up to it;
//   - per train record: train/loss, train/accuracy, train/lr,
//     train/images_per_sec, train/allreduce_wait_fraction;
//   - per eval record: test/loss, test/accuracy (val/loss, val/accuracy
//     with a validation split), and per class test_precision/NAME and
//     test_recall/NAME from its confusion matrix.
// Scalars are float32, as TensorBoard stores them. The file is flushed at
// every evaluation and at the end.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "dist/run_hook.h"

namespace dptrain {

class TensorBoardWriter : public RunHook {
 public:
  // `config`: the resolved config's text, shown under "config".
  TensorBoardWriter(std::string run_dir, std::string config);
  ~TensorBoardWriter() override;
  void on_start(const RunInfo& info) override;
  void on_record(const MetricsRecord& record) override;
  void on_end(const RunEnd& end) override;

  const std::string& path() const { return path_; }

 private:
  void write(const TbEvent& event);
  void flush();

  std::string run_dir_, config_, path_;
  std::vector<std::string> class_names_;
  std::FILE* file_ = nullptr;
};

}  // namespace dptrain
