// The stall watchdog: silent while steps keep their pace, one line naming
// the wait once no step has finished for factor x the median step time
// (and at least the minimum), again at twice that, and a line when the
// stall ends.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "monitor/stall_watchdog.h"

using namespace moetrain::monitor;
using namespace std::chrono_literals;

namespace {

struct Lines {
  std::mutex mutex;
  std::vector<std::string> lines;
  void add(const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex);
    lines.push_back(line);
  }
  std::vector<std::string> get() {
    std::lock_guard<std::mutex> lock(mutex);
    return lines;
  }
};

}  // namespace

TEST(StallWatchdog, NamesTheWaitAfterFactorTimesTheMedianStep) {
  Lines out;
  std::string collective;
  std::mutex collective_mutex;
  StallWatchdog watchdog(
      {10, 0.0, 0.01},
      [&] {
        std::lock_guard<std::mutex> lock(collective_mutex);
        return collective;
      },
      [&](const std::string& line) { out.add(line); });
  for (int step = 1; step <= 5; ++step) {
    std::this_thread::sleep_for(20ms);
    watchdog.step_finished(step, 0.02);
  }
  EXPECT_TRUE(out.get().empty()) << out.get().front();
  EXPECT_DOUBLE_EQ(watchdog.median_step_seconds(), 0.02);
  watchdog.set_activity("loading the batches of step 6");
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(out.get().empty()) << "under 10 x 0.02 s: " << out.get().front();
  std::this_thread::sleep_for(150ms);  // past 0.2 s
  ASSERT_EQ(out.get().size(), 1u);
  EXPECT_NE(out.get()[0].find("stall: no step has finished for "), std::string::npos) << out.get()[0];
  EXPECT_NE(out.get()[0].find("since step 5 (10 x the median step time 0.02 s); rank 0 is waiting on: loading the "
                              "batches of step 6"),
            std::string::npos)
      << out.get()[0];
  {
    std::lock_guard<std::mutex> lock(collective_mutex);
    collective = "all_reduce on the dp group (8 bytes), open for 0.2 s";
  }
  std::this_thread::sleep_for(250ms);  // past 2 x 0.2 s
  ASSERT_EQ(out.get().size(), 2u);
  EXPECT_NE(out.get()[1].find("waiting on: a collective, all_reduce on the dp group (8 bytes), open for 0.2 s (during "
                              "loading the batches of step 6)"),
            std::string::npos)
      << out.get()[1];
  watchdog.step_finished(6, 0.5);
  ASSERT_EQ(out.get().size(), 3u);
  EXPECT_EQ(out.get()[2].rfind("stall over: step 6 finished ", 0), 0u) << out.get()[2];
}

TEST(StallWatchdog, WaitsForTheMinimumAndForAFirstStep) {
  Lines out;
  StallWatchdog watchdog({10, 0.3, 0.01}, {}, [&](const std::string& line) { out.add(line); });
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(out.get().empty()) << "no median before the first step";
  watchdog.step_finished(1, 0.001);
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(out.get().empty()) << "10 x 1 ms is under the 0.3 s minimum";
  std::this_thread::sleep_for(250ms);
  ASSERT_EQ(out.get().size(), 1u);
  EXPECT_NE(out.get()[0].find(", at least 0.30 s); rank 0 is waiting on: starting"), std::string::npos) << out.get()[0];
}
