// What the user sees (launcher/status_line.h): off a terminal one plain
// line per metrics record and none per heartbeat; on one, a line
// rewritten in place with step/total, loss, accuracy, images/s, ETA and
// restarts, cleared before lines of their own.
#include <cstdio>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "launcher/status_line.h"

namespace dptrain::launcher {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Everything written to a FILE*, read back.
class Capture {
 public:
  Capture() : file_(std::tmpfile()) {}
  ~Capture() { std::fclose(file_); }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) out.append(buf, n);
    return out;
  }

 private:
  std::FILE* file_;
};

Hello hello(int64_t total) {
  Hello h;
  h.set_steps_total(total);
  return h;
}

Heartbeat beat(int64_t step) {
  Heartbeat b;
  b.set_step(step);
  b.set_epoch(1);
  return b;
}

MetricsRecord train_record(int step) {
  MetricsRecord r;
  r.set_kind("train");
  r.set_epoch(1);
  r.set_step(step);
  r.set_train_loss(0.5);
  r.set_train_accuracy(0.8);
  r.set_images_per_sec(1234);
  return r;
}

TEST(LauncherStatusLine, PlainLinesArePerRecordNotPerHeartbeat) {
  Capture out;
  StatusLine status(out.file(), /*live=*/false);
  status.hello(hello(100));
  for (int s = 1; s <= 5; ++s) status.heartbeat(beat(s));
  status.refresh();
  EXPECT_EQ(out.text(), "");
  status.metrics(train_record(10));
  MetricsRecord eval;
  eval.set_kind("eval");
  eval.set_epoch(1);
  eval.set_step(10);
  eval.set_test_accuracy(0.75);
  status.metrics(eval);
  // The ETA follows the heartbeats' pace, which depends on time here.
  EXPECT_THAT(
      out.text(),
      ::testing::MatchesRegex(
          "epoch 1  step 10/100  loss 0.5000  acc 80.0%  1234 img/s  ETA [-0-9:]+  restarts 0\n"
          "epoch 1  step 10  test_loss 0.0000  test_accuracy 75.00%\n"));
  EXPECT_THAT(out.text(), Not(HasSubstr("\r")));
}

TEST(LauncherStatusLine, LiveLineIsRewrittenInPlace) {
  Capture out;
  StatusLine status(out.file(), /*live=*/true);
  status.print("dptrain-launch: start 1");
  EXPECT_EQ(out.text(), "dptrain-launch: start 1\n") << "nothing to show before the hello";
  status.hello(hello(100));
  status.heartbeat(beat(10));
  status.metrics(train_record(10));
  status.set_restarts(2);
  status.refresh();
  const std::string text = status.text();
  for (const char* part :
       {"epoch 1", "step 10/100", "loss 0.5000", "acc 80.0%", "1234 img/s", "ETA", "restarts 2"}) {
    EXPECT_THAT(text, HasSubstr(part));
  }
  EXPECT_THAT(out.text(), HasSubstr("\r\033[K" + text));
  status.print("dptrain-launch: restart 1");
  EXPECT_THAT(out.text(), HasSubstr(text + "\r\033[Kdptrain-launch: restart 1\n"));
  status.clear();
  EXPECT_EQ(out.text().substr(out.text().size() - 4), "\r\033[K");
}

}  // namespace
}  // namespace dptrain::launcher
