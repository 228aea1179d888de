// CheckpointWriter on its background thread: every checkpoint handed over
// is written in turn and reported once, from the writer's thread, while
// the caller goes on; the oldest beyond `keep` go; a write that fails is
// reported with its reason and leaves the previous checkpoint, LATEST and
// no temporary behind; the destructor finishes what is pending. (Also the
// ThreadSanitizer build's test of the writer: scripts/sanitize.)
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/checkpoint.h"
#include "core/file_io.h"
#include "tests/e2e/run_command.h"

namespace dptrain {
namespace {

namespace fs = std::filesystem;

Checkpoint at_step(int64_t step) {
  Checkpoint c;
  c.set_step(step);
  NamedTensor* t = c.mutable_weights()->add_tensor();
  t->set_name("w");
  const float value = static_cast<float>(step);
  std::string bytes(sizeof value, '\0');
  std::memcpy(bytes.data(), &value, sizeof value);
  t->add_dims(1);
  t->set_data(bytes);
  return c;
}

// What the writer reported, from its thread.
struct Reports {
  std::mutex mutex;
  std::vector<int64_t> steps;
  std::vector<std::string> errors;
  CheckpointWriter::Done done() {
    return [this](const std::string& path, int64_t step, const std::string& error) {
      std::lock_guard lock(mutex);
      steps.push_back(step);
      errors.push_back(path.empty() ? error : "");
    };
  }
};

std::vector<std::string> names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(CheckpointWriterTest, WritesEachInTurnKeepsTheNewestAndReportsEachOnce) {
  dptrain::testing::TempDir dir;
  Reports reports;
  std::string last;
  {
    CheckpointWriter writer(dir.path().string(), 2, reports.done());
    for (int64_t step = 1; step <= 20; ++step) writer.write(at_step(step));
    last = writer.flush();
  }
  EXPECT_EQ(last, (dir.path() / checkpoint_file_name(20)).string());
  EXPECT_EQ(read_checkpoint(last).weights().tensor(0).data(),
            at_step(20).weights().tensor(0).data());
  EXPECT_THAT(names(dir.path().string()),
              ::testing::ElementsAre("LATEST", checkpoint_file_name(19), checkpoint_file_name(20)));
  EXPECT_EQ(read_file(dir / "LATEST"), checkpoint_file_name(20) + "\n");
  std::vector<int64_t> expected(20);
  for (int64_t i = 0; i < 20; ++i) expected[static_cast<size_t>(i)] = i + 1;
  EXPECT_EQ(reports.steps, expected);
  EXPECT_THAT(reports.errors, ::testing::Each(""));
}

TEST(CheckpointWriterTest, AFailedWriteIsReportedAndKeepsThePrevious) {
  dptrain::testing::TempDir dir;
  Reports reports;
  CheckpointWriter writer(dir.path().string(), 3, reports.done(), [](int64_t step) {
    if (step == 2) throw std::runtime_error("disk gone at step 2");
  });
  writer.write(at_step(1));
  EXPECT_EQ(writer.flush(), (dir.path() / checkpoint_file_name(1)).string());
  writer.write(at_step(2));
  EXPECT_EQ(writer.flush(), "") << "the last one failed";
  EXPECT_THAT(names(dir.path().string()),
              ::testing::ElementsAre("LATEST", checkpoint_file_name(1)));
  EXPECT_EQ(read_file(dir / "LATEST"), checkpoint_file_name(1) + "\n");
  std::lock_guard lock(reports.mutex);
  ASSERT_EQ(reports.steps, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(reports.errors[0], "");
  EXPECT_THAT(reports.errors[1], ::testing::HasSubstr("disk gone at step 2"));
}

TEST(CheckpointWriterTest, TheDestructorFinishesThePendingWrite) {
  dptrain::testing::TempDir dir;
  Reports reports;
  {
    CheckpointWriter writer(dir.path().string(), 1, reports.done());
    writer.write(at_step(7));
  }
  EXPECT_EQ(read_checkpoint((dir.path() / checkpoint_file_name(7)).string()).step(), 7);
  EXPECT_EQ(reports.steps, (std::vector<int64_t>{7}));
}

}  // namespace
}  // namespace dptrain
