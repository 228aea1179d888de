// Stop signals (dist/stop_signals.h): after watch(), every thread started
// has them blocked, so none is interrupted at work; the watcher turns one
// into a stop request while a StopSignals lives, and outside its life the
// signal ends the process as its default action would. Each case runs in
// a process of its own (a death test), since watch() changes the process.
#include "dist/stop_signals.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <thread>

namespace dptrain {
namespace {

TEST(StopSignalsDeathTest, AreTakenOffTheWorkingThreadsAndAskForAStop) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StopSignals::watch();
        bool blocked = false;
        std::thread([&blocked] {
          sigset_t now;
          pthread_sigmask(SIG_BLOCK, nullptr, &now);
          blocked = sigismember(&now, SIGTERM) == 1 && sigismember(&now, SIGINT) == 1 &&
                    sigismember(&now, SIGUSR1) == 1;
        }).join();
        if (!blocked) _exit(3);
        StopSignals signals;
        kill(getpid(), SIGUSR1);
        for (int i = 0; i < 1000 && signals.requests() == kNoRequest; ++i) usleep(10000);
        _exit(signals.requests() == kStopRequest ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "got signal 10");
}

TEST(StopSignalsDeathTest, EndTheProcessOutsideTraining) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StopSignals::watch();
        kill(getpid(), SIGTERM);
        sleep(30);
        _exit(0);
      },
      ::testing::KilledBySignal(SIGTERM), "");
}

TEST(StopSignalsDeathTest, ASecondSigintEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StopSignals::watch();
        StopSignals signals;
        kill(getpid(), SIGINT);
        for (int i = 0; i < 1000 && signals.requests() == kNoRequest; ++i) usleep(10000);
        kill(getpid(), SIGINT);
        sleep(30);
        _exit(0);
      },
      ::testing::KilledBySignal(SIGINT), "");
}

}  // namespace
}  // namespace dptrain
