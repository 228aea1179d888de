// Every transition of the supervisor's table (launcher/transition_table.h),
// without a process in sight: what each exit code, stall, signal and
// back-off does in each state, the restart budget, and the back-off curve.
#include <gtest/gtest.h>

#include "launcher/transition_table.h"

namespace dptrain::launcher {
namespace {

using S = SupervisorState;

Event exited(int code, bool progressed = true) {
  Event e{EventKind::kExit};
  e.exit_code = code;
  e.progressed = progressed;
  return e;
}

Event killed(int signo) {
  Event e{EventKind::kExit};
  e.signal = signo;
  return e;
}

Event event(EventKind kind) { return Event{kind}; }

Budget budget(int used, int max) {
  Budget b;
  b.restarts_used = used;
  b.max_restarts = max;
  return b;
}

Transition from(S state, const Event& e, Budget b = budget(0, 3),
                StopCause cause = StopCause::kNone) {
  return next_transition(state, cause, e, b);
}

TEST(LauncherTransitionTable, HelloMovesStartingToRunning) {
  const Transition t = from(S::kStarting, event(EventKind::kHello));
  EXPECT_EQ(t.next, S::kRunning);
  EXPECT_EQ(t.action, Action::kNone);
  EXPECT_FALSE(t.cause.empty());
}

TEST(LauncherTransitionTable, ExitZeroIsDone) {
  for (S s : {S::kStarting, S::kRunning}) {
    const Transition t = from(s, exited(0));
    EXPECT_EQ(t.next, S::kDone);
    EXPECT_EQ(t.action, Action::kFinish);
    EXPECT_EQ(t.exit_code, 0);
  }
}

TEST(LauncherTransitionTable, ExitTwoIsNeverRestarted) {
  for (S s : {S::kStarting, S::kRunning}) {
    const Transition t = from(s, exited(2), budget(0, 100));
    EXPECT_EQ(t.next, S::kFailed);
    EXPECT_EQ(t.action, Action::kFinish);
    EXPECT_EQ(t.exit_code, 2);
    EXPECT_FALSE(t.counts_restart);
  }
}

TEST(LauncherTransitionTable, ExitOneAndSignalsAreRestartedWhileTheBudgetLasts) {
  for (const Event& e : {exited(1), exited(137), killed(9), killed(11)}) {
    const Transition t = from(S::kRunning, e, budget(2, 3));
    EXPECT_EQ(t.next, S::kRestarting) << describe_exit(e);
    EXPECT_EQ(t.action, Action::kWaitBackoff);
    EXPECT_TRUE(t.counts_restart);
    EXPECT_TRUE(t.is_failure);
  }
  EXPECT_NE(from(S::kRunning, killed(9)).cause.find("signal 9"), std::string::npos);
}

TEST(LauncherTransitionTable, ExhaustedRestartsFailWithExitOne) {
  const Transition t = from(S::kRunning, exited(1), budget(3, 3));
  EXPECT_EQ(t.next, S::kFailed);
  EXPECT_EQ(t.action, Action::kFinish);
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.cause.find("exhausted"), std::string::npos) << t.cause;
  EXPECT_EQ(from(S::kRunning, exited(1), budget(0, 0)).next, S::kFailed);
}

TEST(LauncherTransitionTable, ExitSeventyFiveResumesWithoutCounting) {
  const Transition t = from(S::kRunning, exited(75), budget(3, 3));
  EXPECT_EQ(t.next, S::kRestarting);
  EXPECT_EQ(t.action, Action::kWaitBackoff);
  EXPECT_TRUE(t.counts_resume);
  EXPECT_FALSE(t.counts_restart);
  EXPECT_FALSE(t.is_failure);
}

TEST(LauncherTransitionTable, ExitSeventyFiveWithoutProgressCounts) {
  const Transition t = from(S::kStarting, exited(75, /*progressed=*/false), budget(0, 3));
  EXPECT_EQ(t.next, S::kRestarting);
  EXPECT_TRUE(t.counts_restart);
  EXPECT_EQ(from(S::kStarting, exited(75, false), budget(3, 3)).next, S::kFailed);
}

TEST(LauncherTransitionTable, StallKillsTheJobAndItsExitIsAFailure) {
  for (S s : {S::kStarting, S::kRunning}) {
    const Transition t = from(s, event(EventKind::kStall));
    EXPECT_EQ(t.next, S::kStopping);
    EXPECT_EQ(t.action, Action::kKillJob);
    EXPECT_EQ(t.stop_cause, StopCause::kStall);
    EXPECT_TRUE(t.is_failure);
  }
  // Killed for a stall, it ends by a signal or with whatever mpirun makes of it.
  for (const Event& e : {killed(9), exited(1), exited(75)}) {
    const Transition t = from(S::kStopping, e, budget(0, 3), StopCause::kStall);
    EXPECT_EQ(t.next, S::kRestarting) << describe_exit(e);
    EXPECT_TRUE(t.counts_restart);
  }
  EXPECT_EQ(from(S::kStopping, killed(9), budget(1, 1), StopCause::kStall).next, S::kFailed);
  // A job that finished just as it was declared stalled has finished.
  EXPECT_EQ(from(S::kStopping, exited(0), budget(0, 3), StopCause::kStall).next, S::kDone);
}

TEST(LauncherTransitionTable, FirstStopRequestAsksSecondKills) {
  for (S s : {S::kStarting, S::kRunning}) {
    const Transition t = from(s, event(EventKind::kStopRequest));
    EXPECT_EQ(t.next, S::kStopping);
    EXPECT_EQ(t.action, Action::kSendStop);
    EXPECT_EQ(t.stop_cause, StopCause::kRequest);
    EXPECT_EQ(from(s, event(EventKind::kKillRequest)).action, Action::kKillJob);
  }
  for (EventKind k : {EventKind::kStopRequest, EventKind::kKillRequest}) {
    const Transition t = from(S::kStopping, event(k), budget(0, 3), StopCause::kRequest);
    EXPECT_EQ(t.next, S::kStopping);
    EXPECT_EQ(t.action, Action::kKillJob);
  }
  // A signal while a stall is being killed: the user's wish wins (no restart).
  const Transition t =
      from(S::kStopping, event(EventKind::kStopRequest), budget(0, 3), StopCause::kStall);
  EXPECT_EQ(t.stop_cause, StopCause::kRequest);
}

TEST(LauncherTransitionTable, StoppedOnRequestTheExitDecidesTheOutcome) {
  const Budget b = budget(0, 3);
  EXPECT_EQ(from(S::kStopping, exited(75), b, StopCause::kRequest).next, S::kPreempted);
  EXPECT_EQ(from(S::kStopping, exited(75), b, StopCause::kRequest).exit_code, 75);
  EXPECT_EQ(from(S::kStopping, killed(15), b, StopCause::kRequest).exit_code, 75);
  EXPECT_EQ(from(S::kStopping, exited(1), b, StopCause::kRequest).exit_code, 75);
  EXPECT_EQ(from(S::kStopping, exited(0), b, StopCause::kRequest).next, S::kDone);
  EXPECT_EQ(from(S::kStopping, exited(2), b, StopCause::kRequest).exit_code, 2);
  for (const Event& e : {exited(75), killed(9), exited(1)}) {
    EXPECT_FALSE(from(S::kStopping, e, b, StopCause::kRequest).counts_restart);
  }
}

TEST(LauncherTransitionTable, StallWhileStoppingKills) {
  const Transition t =
      from(S::kStopping, event(EventKind::kStall), budget(0, 3), StopCause::kRequest);
  EXPECT_EQ(t.next, S::kStopping);
  EXPECT_EQ(t.action, Action::kKillJob);
  EXPECT_EQ(t.stop_cause, StopCause::kRequest);
}

TEST(LauncherTransitionTable, BackoffElapsedStartsAgain) {
  const Transition t = from(S::kRestarting, event(EventKind::kBackoffElapsed));
  EXPECT_EQ(t.next, S::kStarting);
  EXPECT_EQ(t.action, Action::kStartJob);
}

TEST(LauncherTransitionTable, StopBetweenAttemptsEndsAtOnce) {
  for (EventKind k : {EventKind::kStopRequest, EventKind::kKillRequest}) {
    const Transition t = from(S::kRestarting, event(k));
    EXPECT_EQ(t.next, S::kPreempted);
    EXPECT_EQ(t.action, Action::kFinish);
    EXPECT_EQ(t.exit_code, 75);
  }
}

TEST(LauncherTransitionTable, StartFailureIsAUserError) {
  const Transition t = from(S::kStarting, event(EventKind::kStartFailed));
  EXPECT_EQ(t.next, S::kFailed);
  EXPECT_EQ(t.exit_code, 2);
}

TEST(LauncherTransitionTable, EventsThatMeanNothingChangeNothing) {
  const auto ignored = [](S s, EventKind k, StopCause c = StopCause::kNone) {
    const Transition t = next_transition(s, c, Event{k}, budget(0, 3));
    return t.next == s && t.action == Action::kNone && t.cause.empty();
  };
  EXPECT_TRUE(ignored(S::kRunning, EventKind::kHello));
  EXPECT_TRUE(ignored(S::kRunning, EventKind::kBackoffElapsed));
  EXPECT_TRUE(ignored(S::kRestarting, EventKind::kHello));
  EXPECT_TRUE(ignored(S::kRestarting, EventKind::kStall));
  EXPECT_TRUE(ignored(S::kStopping, EventKind::kHello, StopCause::kRequest));
  for (S s : {S::kDone, S::kFailed, S::kPreempted}) {
    EXPECT_TRUE(is_terminal(s));
    for (EventKind k :
         {EventKind::kHello, EventKind::kExit, EventKind::kStall, EventKind::kStopRequest,
          EventKind::kKillRequest, EventKind::kBackoffElapsed, EventKind::kStartFailed}) {
      EXPECT_TRUE(ignored(s, k)) << state_name(s);
    }
  }
}

TEST(LauncherTransitionTable, BackoffStartsAtMostASecondDoublesAndIsCapped) {
  EXPECT_LE(backoff_seconds(1, 1, 30), 1.0);
  EXPECT_DOUBLE_EQ(backoff_seconds(1, 1, 30), 1);
  EXPECT_DOUBLE_EQ(backoff_seconds(2, 1, 30), 2);
  EXPECT_DOUBLE_EQ(backoff_seconds(3, 1, 30), 4);
  EXPECT_DOUBLE_EQ(backoff_seconds(6, 1, 30), 30);
  EXPECT_DOUBLE_EQ(backoff_seconds(1000, 1, 30), 30);
}

}  // namespace
}  // namespace dptrain::launcher
