// The watchdog: scopes that close in time leave the process alone; one that
// does not ends it with the one documented line, after running its hook.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "parallel/mpi_runtime.h"
#include "parallel/watchdog.h"

namespace moetrain::parallel {
namespace {

TEST(Watchdog, ScopesThatCloseInTimeDoNothing) {
  Watchdog& w = Watchdog::instance();
  const size_t before = w.open_scopes();
  {
    auto a = w.watch("all_reduce", 64, 0.5);
    auto b = w.watch("broadcast", 8, 0.5);
    EXPECT_EQ(w.open_scopes(), before + 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(w.open_scopes(), before);
  // Still alive well past the timeout of the closed scopes.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  SUCCEED();
}

TEST(Watchdog, ZeroTimeoutIsNotWatched) {
  Watchdog& w = Watchdog::instance();
  const size_t before = w.open_scopes();
  auto scope = w.watch("barrier", 0, 0.0);
  EXPECT_EQ(w.open_scopes(), before);
}

TEST(Watchdog, MovedScopeClosesOnce) {
  Watchdog& w = Watchdog::instance();
  const size_t before = w.open_scopes();
  auto a = w.watch("send", 4, 10.0);
  Watchdog::Scope b = std::move(a);
  EXPECT_EQ(w.open_scopes(), before + 1);
  a.close();  // moved-from: nothing
  EXPECT_EQ(w.open_scopes(), before + 1);
  b.close();
  EXPECT_EQ(w.open_scopes(), before);
}

TEST(Watchdog, MessageFormat) {
  EXPECT_EQ(Watchdog::timeout_message("all_reduce", 4096, 2.0),
            "all_reduce (4096 bytes) did not finish within 2 s; aborting the job");
  EXPECT_EQ(Watchdog::timeout_message("recv", 1, 0.5), "recv (1 bytes) did not finish within 0.5 s; aborting the job");
}

TEST(Watchdog, WatchUntilClosesItselfWhenFinished) {
  Watchdog& w = Watchdog::instance();
  const size_t before = w.open_scopes();
  std::atomic<bool> done{false};
  auto scope = w.watch_until("all_reduce (nccl)", 64, 0.5, [&done] { return done.load(); });
  EXPECT_EQ(w.open_scopes(), before + 1);
  done = true;
  for (int i = 0; i < 500 && w.open_scopes() > before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(w.open_scopes(), before);
  // Still alive past the timeout although the scope object was never closed.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  scope.close();  // already gone: nothing
  EXPECT_EQ(w.open_scopes(), before);
}

TEST(WatchdogDeathTest, WatchUntilThatNeverFinishesAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        mpi_init();
        auto scope = Watchdog::instance().watch_until("reduce_scatter (nccl)", 512, 0.3, [] { return false; });
        std::this_thread::sleep_for(std::chrono::seconds(20));
        std::exit(0);
      },
      ::testing::ExitedWithCode(1),
      "moetrain: rank 0: reduce_scatter \\(nccl\\) \\(512 bytes\\) did not finish within 0.3 s");
}

TEST(WatchdogDeathTest, OnlyTheFirstAbortPrints) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        EXPECT_TRUE(announce_abort("first failure"));
        EXPECT_TRUE(job_aborting());
        const bool again = announce_abort("second failure");
        std::fputs(again ? "printed twice\n" : "once\n", stderr);
        end_job(3);
      },
      ::testing::ExitedWithCode(3), "moetrain: rank .: first failure\nonce");
}

TEST(WatchdogDeathTest, StuckScopeAbortsWithOneLineAfterItsHook) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        mpi_init();
        auto scope = Watchdog::instance().watch("all_to_all", 1234, 0.3, [] { std::fputs("hook ran\n", stderr); });
        std::this_thread::sleep_for(std::chrono::seconds(20));
        std::fputs("watchdog did not fire\n", stderr);
        std::exit(0);
      },
      ::testing::ExitedWithCode(1),
      "moetrain: rank 0: all_to_all \\(1234 bytes\\) did not finish within 0.3 s; aborting the job\nhook ran");
}

TEST(WatchdogDeathTest, HangingHookDoesNotPreventTheAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        mpi_init();
        auto scope = Watchdog::instance().watch("broadcast", 8, 0.2,
                                                [] { std::this_thread::sleep_for(std::chrono::seconds(60)); });
        std::this_thread::sleep_for(std::chrono::seconds(30));
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "moetrain: rank 0: broadcast \\(8 bytes\\) did not finish within 0.2 s");
}

}  // namespace
}  // namespace moetrain::parallel
