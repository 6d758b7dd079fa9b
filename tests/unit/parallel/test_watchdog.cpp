// The watchdog: scopes that close in time leave the process alone; one that
// does not ends it with the one documented line, after running its hook.
#include <gtest/gtest.h>

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
      "hook ran\nmoetrain: rank 0: all_to_all \\(1234 bytes\\) did not finish within 0.3 s; aborting the job");
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
